# The robustness suite (tests/robust/): every program on malformed input (pairs, tokenizers, config.json,
# safetensors, HDF5 pairs files, flags), outputs that name an input or a non-regular file, full disks and signals.
# Each case checks: a non-zero exit with a message naming the file and the key, line or tensor; no crash (status
# >= 128, a signal, a sanitizer report); no partial or replaced output; inputs unchanged (sha256). One test per
# group, label `robust`: .ci/run also runs them against the AddressSanitizer + UBSan build (OT_SANITIZE).
if(Python3_Interpreter_FOUND)
  foreach(group outputs disk config pairs signals tokenizer model pairs_h5 flags export train ckpt)
    add_test(NAME robust_${group}
             COMMAND ${Python3_EXECUTABLE} ${CMAKE_CURRENT_SOURCE_DIR}/robust/suite.py ${OT_BIN}
                     ${CMAKE_BINARY_DIR}/test_robust ${group}
             WORKING_DIRECTORY ${CMAKE_SOURCE_DIR})
    set_tests_properties(robust_${group} PROPERTIES LABELS robust TIMEOUT 300 SKIP_RETURN_CODE 77)
  endforeach()
else()
  add_test(NAME robust_suite COMMAND sh -c "echo 'SKIPPED: no python3 interpreter found by CMake'; exit 77")
  set_tests_properties(robust_suite PROPERTIES LABELS robust SKIP_RETURN_CODE 77)
endif()
