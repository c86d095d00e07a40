# Training checkpoints (trainer/train/checkpoint.c): one program, three independent tests, each in its own scratch dir.
add_executable(test_ckpt ${CMAKE_CURRENT_SOURCE_DIR}/test_ckpt_checkpoint.c ${CMAKE_CURRENT_SOURCE_DIR}/test_util.c)
target_link_libraries(test_ckpt PRIVATE ot_train)
foreach(part roundtrip damage kill)
  add_test(NAME test_ckpt_${part}
           COMMAND test_ckpt ${part} tests/fixtures/golden ${CMAKE_BINARY_DIR}/test_ckpt_out/${part}
           WORKING_DIRECTORY ${CMAKE_SOURCE_DIR})
  set_tests_properties(test_ckpt_${part} PROPERTIES TIMEOUT 60)
endforeach()
