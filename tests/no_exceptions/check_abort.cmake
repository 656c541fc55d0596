# The -fno-exceptions program must abort on bad input, printing the error with its ID.
execute_process(COMMAND ${PROGRAM} bad RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
if(rc EQUAL 0)
  message(FATAL_ERROR "bad input did not stop the program: ${out}${err}")
endif()
if(NOT err MATCHES "\\[moe\\.router\\.top_k\\] k=9 exceeds num_experts=8")
  message(FATAL_ERROR "unexpected stderr (rc=${rc}): ${err}")
endif()
message(STATUS "aborted as expected (${rc}): ${err}")
