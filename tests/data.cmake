# Data pipeline tests: tokenizer, harmony rendering, pair input, the pairs HDF5 file, the loader, osstune-prep.
ot_add_c_test(NAME test_data_tokenizer SOURCE test_data_tokenizer.c LIB ot_formats)
ot_add_c_test(NAME test_data_harmony SOURCE test_data_harmony.c LIB ot_graph)
ot_add_c_test(NAME test_data_pairs_input SOURCE test_data_pairs_input.c LIB ot_formats)
ot_add_c_test(NAME test_data_h5 SOURCE test_data_h5.c LIB ot_formats)
ot_add_c_test(NAME test_data_loader SOURCE test_data_loader.c LIB ot_train)
# decode(encode(x)) == x over the corpus at ../shared/data/taigi (or data/sample when it is absent); also
# prints the encoder's speed.
ot_add_c_test(NAME test_data_roundtrip SOURCE test_data_roundtrip.c LIB ot_formats)

if(Python3_Interpreter_FOUND)
  # The tokenizer.json path: a model directory whose tokenizer.json is generated from the .tiktoken file
  # (standard library only), then loaded by the C tokenizer and compared with the .tiktoken one.
  set(OT_DATA_TEST_DIR ${CMAKE_BINARY_DIR}/test_data)
  add_test(NAME data_make_tokenizer_json
           COMMAND ${Python3_EXECUTABLE} ${CMAKE_CURRENT_SOURCE_DIR}/data_make_tokenizer_json.py
                   data/o200k_base.tiktoken ${OT_DATA_TEST_DIR}/model
           WORKING_DIRECTORY ${CMAKE_SOURCE_DIR})
  set_tests_properties(data_make_tokenizer_json PROPERTIES FIXTURES_SETUP data_tokenizer_json)
  add_test(NAME test_data_tokenizer_json COMMAND test_data_tokenizer ${OT_DATA_TEST_DIR}/model
           WORKING_DIRECTORY ${CMAKE_SOURCE_DIR})
  set_tests_properties(test_data_tokenizer_json PROPERTIES FIXTURES_REQUIRED data_tokenizer_json)

  # osstune-prep from the command line (standard library only).
  add_test(NAME data_prep_cli COMMAND ${Python3_EXECUTABLE} ${CMAKE_CURRENT_SOURCE_DIR}/data_prep_cli.py
                                      $<TARGET_FILE:osstune-prep>
           WORKING_DIRECTORY ${CMAKE_SOURCE_DIR})
  # h5py reads the C writer's output and finds the same samples (skips with 77 only without h5py); with the
  # tokenizers package the ids are also compared with Hugging Face's encoding.
  add_test(NAME data_h5py COMMAND ${Python3_EXECUTABLE} ${CMAKE_CURRENT_SOURCE_DIR}/data_h5py.py
                                  $<TARGET_FILE:osstune-prep> --tokenizer-json ${OT_DATA_TEST_DIR}/model
           WORKING_DIRECTORY ${CMAKE_SOURCE_DIR})
  set_tests_properties(data_h5py PROPERTIES SKIP_RETURN_CODE 77 FIXTURES_REQUIRED data_tokenizer_json)
endif()

if(Python3_Interpreter_FOUND)
  # tools/build-corpus.py on hand-made clones of the corpus's sources (tests/fixtures/corpus): every rule,
  # determinism, the split rule against the shipped rows (data/moe, data/sample; the full corpus when present),
  # osstune-prep on its output, and its errors. Standard library only.
  add_test(NAME test_build_corpus
           COMMAND ${Python3_EXECUTABLE} ${CMAKE_CURRENT_SOURCE_DIR}/test_build_corpus.py $<TARGET_FILE:osstune-prep>
                   ${CMAKE_BINARY_DIR}/test_build_corpus
           WORKING_DIRECTORY ${CMAKE_SOURCE_DIR})
  set_tests_properties(test_build_corpus PROPERTIES TIMEOUT 120)
endif()
