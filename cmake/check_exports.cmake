# check_exports.cmake: run by ctest as `cmake -DNM=... -DLIBRARY=libftrt.so -DHEADERS=include -P ...`.
# The shared library must export exactly the public API: every dynamic symbol it defines is named ft_*
# and declared FT_API in a public header, and every FT_API declaration is exported. A symbol that leaks
# (a helper missing `static` or visibility) or a declared function never defined both fail here.
cmake_minimum_required(VERSION 3.20)
foreach(var IN ITEMS NM LIBRARY HEADERS)
  if(NOT DEFINED ${var})
    message(FATAL_ERROR "check_exports.cmake needs -D${var}=...")
  endif()
endforeach()

# Without nm (binutils) nothing can list the exports. The test is skipped then, not failed:
# tests/CMakeLists.txt turns this line into ctest's "Skipped".
if(NOT NM OR NOT EXISTS "${NM}")
  message(STATUS "exported_symbols skipped: no nm to list the library's exports (install binutils)")
  return()
endif()

execute_process(COMMAND "${NM}" -D --defined-only "${LIBRARY}"
                OUTPUT_VARIABLE nm_output ERROR_VARIABLE nm_error RESULT_VARIABLE nm_result)
if(NOT nm_result EQUAL 0)
  message(FATAL_ERROR "${NM} -D --defined-only ${LIBRARY} failed (${nm_result}): ${nm_error}")
endif()

# Lines look like "0000000000001234 T ft__mutex_lock_slow" (maybe with "@@VERSION"); a version
# definition is an absolute symbol, "00000000 A FTRT_0", and names no code or data.
string(REPLACE "\n" ";" nm_lines "${nm_output}")
set(exported "")
foreach(line IN LISTS nm_lines)
  if(line MATCHES "^[0-9a-fA-F]* *([A-Za-z]) ([^@ ]+)")
    if(NOT CMAKE_MATCH_1 STREQUAL "A")
      list(APPEND exported "${CMAKE_MATCH_2}")
    endif()
  endif()
endforeach()
list(REMOVE_DUPLICATES exported)

# The declared API: names that follow FT_API up to the first "(" (functions) or ";" (data). Block
# comments go first, so that prose mentioning FT_API cannot count; ";" is swapped for "@" because it
# separates CMake list items.
file(GLOB_RECURSE headers "${HEADERS}/*.h")
set(declared "")
foreach(header IN LISTS headers)
  file(READ "${header}" text)
  string(REPLACE ";" "@" text "${text}")
  string(REGEX REPLACE "/\\*([^*]|\\*+[^*/])*\\*+/" "" text "${text}")
  string(REGEX MATCHALL "FT_API[^@(]*[^A-Za-z0-9_]ft_[A-Za-z0-9_]+[ \t\r\n]*[(@[]" declarations "${text}")
  foreach(declaration IN LISTS declarations)
    string(REGEX MATCH "(ft_[A-Za-z0-9_]+)[ \t\r\n]*[(@[]$" unused "${declaration}")
    list(APPEND declared "${CMAKE_MATCH_1}")
  endforeach()
endforeach()
list(REMOVE_DUPLICATES declared)

# A sanitizer build adds instrumentation symbols of its own to the library; they are not ftrt's API.
set(tool_symbol_regex "^$")
if(SANITIZE)
  set(tool_symbol_regex "^(__odr_asan|__asan|__tsan|__ubsan|__sanitizer)")
endif()
# The linker defines these in every shared object; they are not ftrt's either.
set(linker_symbols _init _fini _edata _end __bss_start)

set(problems "")
foreach(symbol IN LISTS exported)
  if(symbol IN_LIST linker_symbols OR symbol MATCHES "${tool_symbol_regex}")
    continue()
  endif()
  if(NOT symbol MATCHES "^ft_")
    string(APPEND problems "  exported without the ft_ prefix: ${symbol}\n")
  elseif(NOT symbol IN_LIST declared)
    string(APPEND problems "  exported but not declared FT_API in ${HEADERS}: ${symbol}\n")
  endif()
endforeach()
foreach(symbol IN LISTS declared)
  if(NOT symbol IN_LIST exported)
    string(APPEND problems "  declared FT_API but not exported by the library: ${symbol}\n")
  endif()
endforeach()

list(LENGTH exported exported_count)
list(LENGTH declared declared_count)
if(declared_count EQUAL 0)
  message(FATAL_ERROR "found no FT_API declarations under ${HEADERS}: the header scan is broken")
endif()
if(problems)
  message(FATAL_ERROR "libftrt.so's exports do not match the public API:\n${problems}")
endif()
message(STATUS "${exported_count} dynamic symbols checked against ${declared_count} FT_API declarations: all match")
