# osstune-export (issue: hand-over to llama.cpp / Ollama / PEFT). Scratch files live under the build tree.
#   test_export_gguf            the GGUF writer, MXFP4 re-packing, Q8_0, the byte alphabet (C)
#   test_export_gguf_types      the writer's file read back by the `gguf` package: every value type
#   test_export_gguf_types_exported  every key of every exported GGUF has the type llama.cpp and Ollama read
#   export_setup                fixture: the tiny model (osstune-init-model), a random non-zero PEFT adapter, and
#                               osstune-export's outputs (bf16 and q8_0 experts; an all-float32 variant)
#   test_export_files_*         every key, type, tensor name/shape/value of the GGUFs, the Modelfiles, peft/
#   test_export_merged_logits   model.gguf's weights run through osstune-logits vs base + adapter (precision choice)
#   test_export_llama_cpp       llama.cpp (llama-cpp-python) logits vs osstune-logits; skipped without the package
#   test_export_errors          bad input: clear message, non-zero exit, nothing written
#   test_export_signals         SIGINT / SIGTERM / SIGKILL at random moments: OUT_DIR as it was, then byte-identical
#   export_trained_setup        fixture: a LoRA trained for a few steps on data/sample (CPU), exported (model.gguf and
#                               Modelfiles; base.gguf + adapter.gguf of the float32 model)
#   test_export_serve           model.gguf served by llama-cpp-python's OpenAI server, asked by the openai client and
#                               the docs' curl command: llama.cpp's own greedy answer; malformed requests
#   test_export_same_tokens     osstune-translate greedy = llama.cpp greedy on the float32 export, token by token
set(OT_EXPORT_SCRATCH ${CMAKE_BINARY_DIR}/test_export)

ot_add_c_test(NAME test_export_gguf SOURCE ${CMAKE_CURRENT_SOURCE_DIR}/test_export_gguf.c LIB ot_formats
              ARGS ${OT_EXPORT_SCRATCH})
set_tests_properties(test_export_gguf PROPERTIES FIXTURES_SETUP export_types_gguf)

# Prints the harmony prompt (text and ids) that formats/harmony.h renders, for the template checks; or the answer
# osstune-translate reads out of given generated ids (--answer).
add_executable(test_export_harmony ${CMAKE_CURRENT_SOURCE_DIR}/test_export_harmony.c)
target_link_libraries(test_export_harmony PRIVATE ot_infer)

if(Python3_Interpreter_FOUND)
  set(OT_EXPORT_PY ${Python3_EXECUTABLE})
  add_test(NAME test_export_gguf_types
           COMMAND ${OT_EXPORT_PY} ${CMAKE_CURRENT_SOURCE_DIR}/test_export_gguf_types.py ${OT_EXPORT_SCRATCH}/types.gguf
           WORKING_DIRECTORY ${CMAKE_SOURCE_DIR})
  set_tests_properties(test_export_gguf_types PROPERTIES FIXTURES_REQUIRED export_types_gguf)

  add_test(NAME export_setup
           COMMAND sh ${CMAKE_CURRENT_SOURCE_DIR}/test_export_setup.sh ${OT_BIN} ${OT_EXPORT_PY} ${OT_EXPORT_SCRATCH}
           WORKING_DIRECTORY ${CMAKE_SOURCE_DIR})
  set_tests_properties(export_setup PROPERTIES FIXTURES_SETUP export_tiny)

  # Every metadata key of every exported GGUF has the type llama.cpp and Ollama read it as.
  add_test(NAME test_export_gguf_types_exported
           COMMAND ${OT_EXPORT_PY} ${CMAKE_CURRENT_SOURCE_DIR}/test_export_gguf_types.py --exported ${OT_EXPORT_SCRATCH}
           WORKING_DIRECTORY ${CMAKE_SOURCE_DIR})
  set_tests_properties(test_export_gguf_types_exported PROPERTIES FIXTURES_REQUIRED export_tiny TIMEOUT 60)

  # test_export_files runs in three parts (the gguf package needs ~9 s per model file for its vocabulary).
  foreach(part model base q8)
    add_test(NAME test_export_files_${part}
             COMMAND ${OT_EXPORT_PY} ${CMAKE_CURRENT_SOURCE_DIR}/test_export_files.py ${OT_BIN} ${OT_EXPORT_SCRATCH}
                     $<TARGET_FILE:test_export_harmony> ${part}
             WORKING_DIRECTORY ${CMAKE_SOURCE_DIR})
    set_tests_properties(test_export_files_${part} PROPERTIES FIXTURES_REQUIRED export_tiny)
  endforeach()
  foreach(t test_export_merged_logits test_export_llama_cpp)
    add_test(NAME ${t}
             COMMAND ${OT_EXPORT_PY} ${CMAKE_CURRENT_SOURCE_DIR}/${t}.py ${OT_BIN} ${OT_EXPORT_SCRATCH}
                     $<TARGET_FILE:test_export_harmony>
             WORKING_DIRECTORY ${CMAKE_SOURCE_DIR})
    set_tests_properties(${t} PROPERTIES FIXTURES_REQUIRED export_tiny SKIP_RETURN_CODE 77)
  endforeach()
  add_test(NAME export_trained_setup
           COMMAND sh ${CMAKE_CURRENT_SOURCE_DIR}/test_export_trained_setup.sh ${OT_BIN} ${OT_EXPORT_SCRATCH}
           WORKING_DIRECTORY ${CMAKE_SOURCE_DIR})
  set_tests_properties(export_trained_setup PROPERTIES FIXTURES_REQUIRED export_tiny FIXTURES_SETUP export_trained
                       TIMEOUT 120)
  add_test(NAME test_export_serve
           COMMAND ${OT_EXPORT_PY} ${CMAKE_CURRENT_SOURCE_DIR}/test_export_serve.py ${OT_EXPORT_SCRATCH}
                   $<TARGET_FILE:test_export_harmony>
           WORKING_DIRECTORY ${CMAKE_SOURCE_DIR})
  set_tests_properties(test_export_serve PROPERTIES FIXTURES_REQUIRED export_trained SKIP_RETURN_CODE 77 TIMEOUT 150)
  add_test(NAME test_export_same_tokens
           COMMAND ${OT_EXPORT_PY} ${CMAKE_CURRENT_SOURCE_DIR}/test_export_same_tokens.py ${OT_BIN} ${OT_EXPORT_SCRATCH}
                   $<TARGET_FILE:test_export_harmony>
           WORKING_DIRECTORY ${CMAKE_SOURCE_DIR})
  # ~60 s on 2 idle cores (mostly osstune-logits over the 201,088-row head); three times that under heavy load.
  set_tests_properties(test_export_same_tokens PROPERTIES FIXTURES_REQUIRED export_trained SKIP_RETURN_CODE 77
                       TIMEOUT 600)
  add_test(NAME test_export_errors
           COMMAND sh ${CMAKE_CURRENT_SOURCE_DIR}/test_export_errors.sh ${OT_BIN} ${OT_EXPORT_PY} ${OT_EXPORT_SCRATCH}
           WORKING_DIRECTORY ${CMAKE_SOURCE_DIR})
  set_tests_properties(test_export_errors PROPERTIES FIXTURES_REQUIRED export_tiny)
  add_test(NAME test_export_signals
           COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/test_export_signals.sh ${OT_BIN} ${OT_EXPORT_SCRATCH}
           WORKING_DIRECTORY ${CMAKE_SOURCE_DIR})
  set_tests_properties(test_export_signals PROPERTIES FIXTURES_REQUIRED export_tiny TIMEOUT 300)
else()
  add_test(NAME test_export_python COMMAND sh -c "echo 'SKIPPED: no python3 interpreter found by CMake'; exit 77")
  set_tests_properties(test_export_python PROPERTIES SKIP_RETURN_CODE 77)
endif()
