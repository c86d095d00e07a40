# CUDA op tests: built only with the CUDA backend, and never registered with ctest — CI machines have no GPU.
# tests/gpu/run_gpu_tests.sh builds and runs them (and compute-sanitizer) on a GPU machine.
if(OT_HAVE_CUDA)
  add_executable(test_ops_cuda ${CMAKE_CURRENT_SOURCE_DIR}/gpu/test_ops_cuda.c ${CMAKE_CURRENT_SOURCE_DIR}/test_util.c)
  target_link_libraries(test_ops_cuda PRIVATE ot_kernels_cuda)
endif()

# The same op test without a GPU: the kernels run on a CPU emulation of CUDA under four thread schedules
# (catches missing barriers, indexing and bounds errors; not tensor-core numerics or timing). Needs g++ and python3.
add_test(NAME test_cuda_emulated
         COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/gpu/run_emulated_tests.sh --build-dir ${CMAKE_BINARY_DIR}/emu
         WORKING_DIRECTORY ${CMAKE_SOURCE_DIR})
set_tests_properties(test_cuda_emulated PROPERTIES TIMEOUT 600)

# The NCCL communicator on real GPUs, under mpirun (one rank per GPU): not registered with ctest (no GPU in CI).
if(OT_HAVE_CUDA AND TARGET ot_comm)
  add_executable(test_comm_nccl ${CMAKE_CURRENT_SOURCE_DIR}/gpu/test_comm_nccl.c ${CMAKE_CURRENT_SOURCE_DIR}/test_util.c)
  target_link_libraries(test_comm_nccl PRIVATE ot_comm CUDA::cudart)
endif()
