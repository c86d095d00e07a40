# Full training (osstune-train --full): model-level gradients against finite differences, the loss falls, a LoRA
# run and osstune-logits on the trained model directory (test_full_runs.sh); and the run-directory cases every
# mode must pass, as the LoRA runs do (test_train_runs.sh --full): 2 and 3 ranks = 1 rank byte for byte, SIGTERM
# + resume, 3 → 2 ranks, SIGKILL during a checkpoint write, a damaged newest checkpoint.
add_executable(test_full_grad ${CMAKE_CURRENT_SOURCE_DIR}/test_full_grad.c ${CMAKE_CURRENT_SOURCE_DIR}/test_util.c)
target_link_libraries(test_full_grad PRIVATE ot_train)
foreach(case grad learn lora)
  add_test(NAME test_full_${case}
           COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/test_full_runs.sh ${OT_BIN} ${CMAKE_BINARY_DIR}/full_runs/${case} ${case}
           WORKING_DIRECTORY ${CMAKE_SOURCE_DIR})
  set_tests_properties(test_full_${case} PROPERTIES TIMEOUT 300
                       ENVIRONMENT "OMPI_ALLOW_RUN_AS_ROOT=1;OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1")
endforeach()
foreach(case ranks sigterm reshard sigkill corrupt)
  add_test(NAME test_full_${case}
           COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/test_train_runs.sh ${OT_BIN} ${CMAKE_BINARY_DIR}/full_runs/${case}
                   --full ${case}
           WORKING_DIRECTORY ${CMAKE_SOURCE_DIR})
  set_tests_properties(test_full_${case} PROPERTIES TIMEOUT 300
                       ENVIRONMENT "OMPI_ALLOW_RUN_AS_ROOT=1;OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1")
endforeach()
