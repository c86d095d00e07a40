# The layer rule (docs/ARCHITECTURE.md): no #include points upward, and train/ and infer/ never include each other.
add_test(NAME test_layer_rule COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/check_layers.sh ${CMAKE_SOURCE_DIR}
         WORKING_DIRECTORY ${CMAKE_SOURCE_DIR})
set_tests_properties(test_layer_rule PROPERTIES TIMEOUT 60)
