# The training benchmark's work model (benchmarks/step_work.c: the FLOPs and bytes per op class behind the roofline
# table), a plain C library so the CPU build checks it; bench_train (gpu_train.cmake) links it.
add_library(ot_step_work STATIC ${CMAKE_SOURCE_DIR}/benchmarks/step_work.c)
target_link_libraries(ot_step_work PUBLIC ot_graph)
ot_add_c_test(NAME test_bench_step_work SOURCE ${CMAKE_CURRENT_SOURCE_DIR}/test_bench_step_work.c LIB ot_step_work)
