# CPU reference kernels: finite-difference gradient checks (double instantiation) and exact-rule checks.
ot_add_c_test(NAME test_kernels_gradcheck SOURCE ${CMAKE_CURRENT_SOURCE_DIR}/test_kernels_gradcheck.c LIB ot_kernels)
ot_add_c_test(NAME test_kernels_misc SOURCE ${CMAKE_CURRENT_SOURCE_DIR}/test_kernels_misc.c LIB ot_kernels)
