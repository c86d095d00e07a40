# Translation: the KV-cache decoder, generation and the harmony answer parser, chrF / BLEU (against sacrebleu),
# and osstune-translate end to end on a tiny model.
ot_add_c_test(NAME test_translate_decode SOURCE ${CMAKE_CURRENT_SOURCE_DIR}/test_translate_decode.c LIB ot_infer
              ARGS tests/fixtures/golden)
ot_add_c_test(NAME test_translate_generate SOURCE ${CMAKE_CURRENT_SOURCE_DIR}/test_translate_generate.c
              LIB ot_infer ARGS data/o200k_base.tiktoken)
ot_add_c_test(NAME test_translate_score SOURCE ${CMAKE_CURRENT_SOURCE_DIR}/test_translate_score.c LIB ot_infer)
if(Python3_Interpreter_FOUND)
  # chrF / BLEU against sacrebleu (tests/requirements.txt): random corpora, and the taigi corpus when present.
  foreach(mode random corpus)
    add_test(NAME test_translate_metrics_${mode}
             COMMAND ${Python3_EXECUTABLE} ${CMAKE_CURRENT_SOURCE_DIR}/test_translate_metrics.py
                     $<TARGET_FILE:osstune-translate> ${mode} ${CMAKE_BINARY_DIR}/test_translate/metrics_${mode}
             WORKING_DIRECTORY ${CMAKE_SOURCE_DIR})
    set_tests_properties(test_translate_metrics_${mode} PROPERTIES SKIP_RETURN_CODE 77)
  endforeach()
endif()
if(Python3_Interpreter_FOUND)
  # osstune-translate end to end on a tiny random model built into the build tree.
  add_test(NAME test_translate_cli
           COMMAND ${Python3_EXECUTABLE} ${CMAKE_CURRENT_SOURCE_DIR}/test_translate_cli.py ${OT_BIN}
                   ${CMAKE_BINARY_DIR}/test_translate/cli
           WORKING_DIRECTORY ${CMAKE_SOURCE_DIR})
endif()
# The batch scheduler (infer/generate_batch.c) on the CPU decoder against ot_translate, on a tiny random model
# with the real vocabulary (made once in the build tree by the fixture test).
set(OT_BATCH_MODEL ${CMAKE_BINARY_DIR}/test_translate/batch_tiny)
add_test(NAME test_translate_batch_model
         COMMAND bash -c "rm -rf '${OT_BATCH_MODEL}' '${OT_BATCH_MODEL}.tmp' && mkdir -p '${CMAKE_BINARY_DIR}/test_translate' && '${OT_BIN}/osstune-init-model' --preset tiny --seed 5 --out '${OT_BATCH_MODEL}' > /dev/null")
set_tests_properties(test_translate_batch_model PROPERTIES FIXTURES_SETUP translate_batch_model)
ot_add_c_test(NAME test_translate_batch SOURCE ${CMAKE_CURRENT_SOURCE_DIR}/test_translate_batch.c LIB ot_infer
              ARGS ${OT_BATCH_MODEL} data/o200k_base.tiktoken)
set_tests_properties(test_translate_batch PROPERTIES FIXTURES_REQUIRED translate_batch_model)
