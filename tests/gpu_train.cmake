# The CUDA training path (trainer/graph/gptoss_cuda.c): its GPU test against the CPU reference and the training
# benchmark. Built with the CUDA backend only and never registered with ctest — CI machines have no GPU;
# tests/gpu/run_gpu_tests.sh runs the test and benchmarks/run_gpu_bench.sh the benchmark on a GPU machine.
if(TARGET ot_kernels_cuda)
  add_executable(test_train_cuda ${CMAKE_CURRENT_SOURCE_DIR}/gpu/test_train_cuda.c ${CMAKE_CURRENT_SOURCE_DIR}/test_util.c)
  target_link_libraries(test_train_cuda PRIVATE ot_train)
  # the GPU decoder (infer/decode_cuda.c) against the CPU decoder; tests/gpu/decode_e2e.sh runs it
  add_executable(test_decode_cuda ${CMAKE_CURRENT_SOURCE_DIR}/gpu/test_decode_cuda.c ${CMAKE_CURRENT_SOURCE_DIR}/test_util.c)
  target_link_libraries(test_decode_cuda PRIVATE ot_infer)
  add_executable(bench_train ${CMAKE_SOURCE_DIR}/benchmarks/bench_train.c)
  target_link_libraries(bench_train PRIVATE ot_train ot_step_work)
  add_executable(bench_moe_gemm ${CMAKE_SOURCE_DIR}/benchmarks/bench_moe_gemm.cu)
  target_link_libraries(bench_moe_gemm PRIVATE ot_kernels_cuda)
  target_compile_options(bench_moe_gemm PRIVATE --expt-relaxed-constexpr)
endif()
