# The CPU reference against transformers + peft (fixtures committed under tests/fixtures/golden).
ot_add_c_test(NAME test_golden SOURCE ${CMAKE_CURRENT_SOURCE_DIR}/test_golden.c LIB ot_trainer
              ARGS tests/fixtures/golden ${CMAKE_BINARY_DIR}/test_golden_out)
target_link_libraries(test_golden PRIVATE PkgConfig::JANSSON)
