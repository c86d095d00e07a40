# formats/: safetensors, config.json, checkpoint directories, PEFT adapter config, and osstune-init-model.
# Scratch files go under the build tree; each test starts by clearing its own subdirectory.
set(OT_FORMATS_SCRATCH ${CMAKE_BINARY_DIR}/test_formats)

ot_add_c_test(NAME test_formats_safetensors SOURCE ${CMAKE_CURRENT_SOURCE_DIR}/test_formats_safetensors.c LIB ot_formats
              ARGS ${OT_FORMATS_SCRATCH}/safetensors)
ot_add_c_test(NAME test_formats_config SOURCE ${CMAKE_CURRENT_SOURCE_DIR}/test_formats_config.c LIB ot_formats)
ot_add_c_test(NAME test_formats_peft SOURCE ${CMAKE_CURRENT_SOURCE_DIR}/test_formats_peft.c LIB ot_formats
              ARGS ${OT_FORMATS_SCRATCH}/peft)
ot_add_c_test(NAME test_formats_checkpoint SOURCE ${CMAKE_CURRENT_SOURCE_DIR}/test_formats_checkpoint.c LIB ot_formats
              ARGS $<TARGET_FILE:osstune-init-model> ${OT_FORMATS_SCRATCH}/checkpoint)
foreach(t test_formats_safetensors test_formats_peft test_formats_checkpoint)
  target_sources(${t} PRIVATE ${CMAKE_CURRENT_SOURCE_DIR}/test_formats_util.c)
endforeach()
add_dependencies(test_formats_checkpoint osstune-init-model)
# test_formats_peft leaves an adapter_config.json that the python check loads with peft.
set_tests_properties(test_formats_peft PROPERTIES FIXTURES_SETUP formats_peft_adapter)

if(Python3_Interpreter_FOUND)
  add_test(NAME test_formats_python
           COMMAND ${Python3_EXECUTABLE} ${CMAKE_CURRENT_SOURCE_DIR}/formats_python_check.py
                   $<TARGET_FILE:osstune-init-model> ${OT_FORMATS_SCRATCH}/python ${OT_FORMATS_SCRATCH}/peft/adapter
           WORKING_DIRECTORY ${CMAKE_SOURCE_DIR})
else()
  add_test(NAME test_formats_python COMMAND sh -c "echo 'SKIPPED: no python3 interpreter found by CMake'; exit 77")
endif()
set_tests_properties(test_formats_python PROPERTIES SKIP_RETURN_CODE 77 FIXTURES_REQUIRED formats_peft_adapter)
