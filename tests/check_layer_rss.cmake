# moe-layer's memory on a GGUF layer of 179 MiB (Q8_0 experts, E 16, H 1024, F 3584): loading,
# packing and one forward must fit in (expert bytes in the file) x 1.25 + 64 MiB of peak RSS
# (issue 26's bound; a loader that kept the mapped file and the packed copy both resident
# would need ~2x), and must reach the packed bytes (the layer really was read and packed).
# CONVERT (optional): a format the experts are converted to (--experts CONVERT), which reads one
# expert as float32 at a time (a float32 copy of the layer would be 4x the file's bytes).
# SCRIPT writes FILE: write_q8_0_layer.py a GGUF file (E 16, 179 MiB), write_hf_layer.py a
# Hugging Face folder of BF16 experts (E 8, 168 MiB; with CONVERT, one expert's tensors read
# at a time, not the layer's float32 experts).
# cmake -DTOOL=moe-layer -DPYTHON=python3 -DSCRIPT=write_q8_0_layer.py -DFILE=out.gguf [-DCONVERT=q4_0] -P check_layer_rss.cmake
set(extra)
if(CONVERT)
  set(extra --experts ${CONVERT})
endif()
set(experts 16)
if(SCRIPT MATCHES "write_hf_layer")
  set(experts 8)
endif()
execute_process(COMMAND ${PYTHON} ${SCRIPT} ${FILE} ${experts} 1024 3584 RESULT_VARIABLE rc ERROR_VARIABLE err)
if(NOT rc EQUAL 0)
  file(REMOVE_RECURSE ${FILE})
  message(FATAL_ERROR "writing ${FILE} failed: ${err}")
endif()
execute_process(COMMAND ${TOOL} --model ${FILE} --info --tokens 4 --threads 2 ${extra} OUTPUT_VARIABLE out ERROR_VARIABLE err RESULT_VARIABLE rc)
file(REMOVE_RECURSE ${FILE})
message("${out}")
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "moe-layer failed: ${err}")
endif()
if(NOT out MATCHES "expert tensors: ([0-9]+) bytes in the file")
  message(FATAL_ERROR "no 'expert tensors: N bytes in the file' line")
endif()
set(file_bytes ${CMAKE_MATCH_1})
if(NOT out MATCHES "peak RSS ([0-9]+)\\.[0-9] MiB")
  message(FATAL_ERROR "no 'peak RSS N MiB' line")
endif()
set(rss_mib ${CMAKE_MATCH_1})
math(EXPR file_mib "${file_bytes} / 1048576")
math(EXPR bound_mib "${file_bytes} * 5 / 4 / 1048576 + 64")
if(rss_mib GREATER bound_mib)
  message(FATAL_ERROR "peak RSS ${rss_mib} MiB exceeds the bound ${bound_mib} MiB (expert tensors ${file_mib} MiB)")
endif()
if(CONVERT)
  if(NOT out MATCHES "experts: ${CONVERT} \\(converted from float32\\)")
    message(FATAL_ERROR "moe-layer did not convert the experts")
  endif()
elseif(rss_mib LESS file_mib)
  message(FATAL_ERROR "peak RSS ${rss_mib} MiB is below the packed bytes (${file_mib} MiB): was the layer read?")
endif()
message(STATUS "peak RSS ${rss_mib} MiB for ${file_mib} MiB of expert tensors (bound ${bound_mib} MiB)")
