# docs/guide.md: every command block runs here on a tiny random model (or is checked against the script that runs it
# on a GPU, or reported as skipped: network, Ollama, llama-server). About 140 s on two busy cores.
if(Python3_Interpreter_FOUND)
  add_test(NAME test_guide COMMAND ${Python3_EXECUTABLE} ${CMAKE_CURRENT_SOURCE_DIR}/test_guide.py ${OT_BIN}
                                   ${CMAKE_BINARY_DIR}/test_guide
           WORKING_DIRECTORY ${CMAKE_SOURCE_DIR})
  set_tests_properties(test_guide PROPERTIES TIMEOUT 600)
endif()
