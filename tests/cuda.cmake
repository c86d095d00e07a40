# CUDA op tests: built only with the CUDA backend, and never registered with ctest — CI machines have no GPU.
# tests/gpu/run_gpu_tests.sh builds and runs them (and compute-sanitizer) on a GPU machine.
if(OT_HAVE_CUDA)
  add_executable(test_ops_cuda ${CMAKE_CURRENT_SOURCE_DIR}/gpu/test_ops_cuda.c ${CMAKE_CURRENT_SOURCE_DIR}/test_util.c)
  target_link_libraries(test_ops_cuda PRIVATE ot_kernels_cuda)
endif()

# The same op test without a GPU: the kernels run on a CPU emulation of CUDA under four thread schedules
# (catches missing barriers, indexing and bounds errors; not tensor-core numerics or timing). Needs g++ and python3.
# Built once, then each schedule is a test of its own (each well under half its timeout on two cores).
add_test(NAME test_cuda_emulated_build
         COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/gpu/run_emulated_tests.sh --build-dir ${CMAKE_BINARY_DIR}/emu --build-only
         WORKING_DIRECTORY ${CMAKE_SOURCE_DIR})
set_tests_properties(test_cuda_emulated_build PROPERTIES TIMEOUT 600 FIXTURES_SETUP cuda_emu)
foreach(schedule lockstep lockstep-reverse warp-ahead warp-ahead-reverse)
  add_test(NAME test_cuda_emulated_${schedule}
           COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/gpu/run_emulated_tests.sh --build-dir ${CMAKE_BINARY_DIR}/emu
                   --no-build --schedule ${schedule}
           WORKING_DIRECTORY ${CMAKE_SOURCE_DIR})
  set_tests_properties(test_cuda_emulated_${schedule} PROPERTIES TIMEOUT 600 FIXTURES_REQUIRED cuda_emu)
endforeach()

# The CUDA training path without a GPU (tests/gpu/train_emu/run.sh): the trainer's CUDA sources built against an
# emulation of the CUDA ops by the CPU reference ops (built once), then each part as a test: the layer graph against
# the CPU (graph), osstune-train / osstune-logits --backend cuda against --backend cpu (e2e), --full (full), sharded
# base weights (shard), the GPU decoder and osstune-translate (decode), --gpu-memory-limit (memlimit).
add_test(NAME test_train_emulated_build
         COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/gpu/train_emu/run.sh --build-only ${CMAKE_BINARY_DIR}/train_emu
         WORKING_DIRECTORY ${CMAKE_SOURCE_DIR})
set_tests_properties(test_train_emulated_build PROPERTIES TIMEOUT 900 FIXTURES_SETUP train_emu)
foreach(part graph e2e full shard decode memlimit)
  add_test(NAME test_train_emulated_${part}
           COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/gpu/train_emu/run.sh --part ${part} ${CMAKE_BINARY_DIR}/train_emu
           WORKING_DIRECTORY ${CMAKE_SOURCE_DIR})
  set_tests_properties(test_train_emulated_${part} PROPERTIES TIMEOUT 600 FIXTURES_REQUIRED train_emu
                       ENVIRONMENT "OMPI_ALLOW_RUN_AS_ROOT=1;OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1")
endforeach()
