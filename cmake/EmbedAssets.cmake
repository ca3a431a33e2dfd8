# EmbedAssets.cmake: compile files into a binary as a lookup table.
#
#   include(${PROJECT_SOURCE_DIR}/cmake/EmbedAssets.cmake)
#   switchboard_embed_assets(
#     OUTPUT    ${CMAKE_CURRENT_BINARY_DIR}/assets_data.cc
#     NAMESPACE switchboard::server
#     INCLUDE   dashboard_assets.h          # optional, see below
#     FILES     ${CMAKE_CURRENT_SOURCE_DIR}/index.html ${CMAKE_CURRENT_SOURCE_DIR}/app.js
#     NAMES     /                           /assets/app.js
#     TYPES     text/html                   text/javascript)
#   add_library(my_assets STATIC ${CMAKE_CURRENT_BINARY_DIR}/assets_data.cc)
#
# The generated file defines, in NAMESPACE,
#   struct EmbeddedAsset { std::string_view path, content_type, body; };
#   std::span<const EmbeddedAsset> EmbeddedAssets();
# When INCLUDE is given the struct is not defined but taken from that header
# (which must declare both in NAMESPACE), so other code can share it.
#
# FILES are absolute paths (relative ones are taken from the current source
# dir); NAMES are the URL paths, TYPES the content types, one per file. Text
# types (text/*, application/javascript, application/json, image/svg+xml) get
# "; charset=utf-8" appended unless they name a charset; pass types without
# ';' (it is CMake's list separator).
#
# The file is regenerated at build time whenever an asset, the arguments or
# this script change. The same file runs as the generator in script mode
# (cmake -P), driven by a manifest written at configure time.

if(NOT CMAKE_SCRIPT_MODE_FILE)
  include_guard(GLOBAL)
  set(_SWITCHBOARD_EMBED_ASSETS_SCRIPT "${CMAKE_CURRENT_LIST_FILE}" CACHE INTERNAL "")

  function(switchboard_embed_assets)
    cmake_parse_arguments(PARSE_ARGV 0 ARG "" "OUTPUT;NAMESPACE;INCLUDE" "FILES;NAMES;TYPES")
    if(ARG_UNPARSED_ARGUMENTS)
      message(FATAL_ERROR "switchboard_embed_assets: unknown arguments: ${ARG_UNPARSED_ARGUMENTS}")
    endif()
    if(NOT ARG_OUTPUT OR NOT ARG_NAMESPACE OR NOT ARG_FILES)
      message(FATAL_ERROR "switchboard_embed_assets: OUTPUT, NAMESPACE and FILES are required")
    endif()
    list(LENGTH ARG_FILES count)
    list(LENGTH ARG_NAMES name_count)
    list(LENGTH ARG_TYPES type_count)
    if(NOT count EQUAL name_count OR NOT count EQUAL type_count)
      message(FATAL_ERROR
        "switchboard_embed_assets: FILES (${count}), NAMES (${name_count}) and TYPES "
        "(${type_count}) must have one entry per asset")
    endif()

    # The manifest carries the arguments to the build-time step. Bracket
    # arguments keep paths and types verbatim; file(CONFIGURE) only rewrites
    # it when it changes, so an unchanged configure does not regenerate.
    set(manifest "set(EMBED_OUTPUT [==[${ARG_OUTPUT}]==])\n")
    string(APPEND manifest "set(EMBED_NAMESPACE [==[${ARG_NAMESPACE}]==])\n")
    string(APPEND manifest "set(EMBED_INCLUDE [==[${ARG_INCLUDE}]==])\n")
    string(APPEND manifest "set(EMBED_COUNT ${count})\n")
    set(abs_files "")
    math(EXPR last "${count} - 1")
    foreach(i RANGE ${last})
      list(GET ARG_FILES ${i} file)
      list(GET ARG_NAMES ${i} name)
      list(GET ARG_TYPES ${i} type)
      get_filename_component(file "${file}" ABSOLUTE BASE_DIR "${CMAKE_CURRENT_SOURCE_DIR}")
      list(APPEND abs_files "${file}")
      string(APPEND manifest "set(EMBED_FILE_${i} [==[${file}]==])\n")
      string(APPEND manifest "set(EMBED_NAME_${i} [==[${name}]==])\n")
      string(APPEND manifest "set(EMBED_TYPE_${i} [==[${type}]==])\n")
    endforeach()
    get_filename_component(out_name "${ARG_OUTPUT}" NAME)
    set(manifest_file "${CMAKE_CURRENT_BINARY_DIR}/${out_name}.manifest.cmake")
    file(CONFIGURE OUTPUT "${manifest_file}" CONTENT "${manifest}" @ONLY)

    add_custom_command(
      OUTPUT "${ARG_OUTPUT}"
      COMMAND "${CMAKE_COMMAND}" "-DSWITCHBOARD_EMBED_MANIFEST=${manifest_file}"
              -P "${_SWITCHBOARD_EMBED_ASSETS_SCRIPT}"
      DEPENDS ${abs_files} "${manifest_file}" "${_SWITCHBOARD_EMBED_ASSETS_SCRIPT}"
      COMMENT "Embedding ${count} assets into ${out_name}"
      VERBATIM)
  endfunction()
  return()
endif()

# --- Script mode: cmake -DSWITCHBOARD_EMBED_MANIFEST=<file> -P EmbedAssets.cmake

if(NOT SWITCHBOARD_EMBED_MANIFEST)
  message(FATAL_ERROR "EmbedAssets.cmake: run with -DSWITCHBOARD_EMBED_MANIFEST=<file>")
endif()
include("${SWITCHBOARD_EMBED_MANIFEST}")

# Escapes `text` as the body of a C++ string literal (for paths and types).
function(_embed_cxx_string out text)
  string(REPLACE "\\" "\\\\" text "${text}")
  string(REPLACE "\"" "\\\"" text "${text}")
  set(${out} "\"${text}\"" PARENT_SCOPE)
endfunction()

# Bytes per line of the generated arrays. The byte-wise regex below is the only
# per-byte work, so ~200 KB embed in well under a second.
set(bytes_per_line 20)
math(EXPR hex_per_line "${bytes_per_line} * 2")
string(REPEAT "[0-9a-f]" ${hex_per_line} line_pattern)

set(arrays "")
set(entries "")
math(EXPR last "${EMBED_COUNT} - 1")
foreach(i RANGE ${last})
  set(file "${EMBED_FILE_${i}}")
  if(NOT EXISTS "${file}")
    message(FATAL_ERROR "EmbedAssets.cmake: ${file} does not exist")
  endif()
  file(SIZE "${file}" size)
  if(size EQUAL 0)
    set(bytes "'\\0'")  # a zero-length array is ill-formed; the view stays empty
  else()
    file(READ "${file}" hex HEX)
    string(REGEX REPLACE "(${line_pattern})" "\\1\n" hex "${hex}")
    string(REGEX REPLACE "([0-9a-f][0-9a-f])" "'\\\\x\\1'," bytes "${hex}")
  endif()
  string(REGEX REPLACE "[\r\n]" " " comment "${EMBED_NAME_${i}} <- ${file}")
  string(APPEND arrays "// ${comment}\n")
  string(APPEND arrays "constexpr char kAsset${i}[] = {\n${bytes}\n};\n\n")

  set(type "${EMBED_TYPE_${i}}")
  if(type MATCHES "^(text/|application/(javascript|json)|image/svg\\+xml)" AND
     NOT type MATCHES "charset")
    string(APPEND type "; charset=utf-8")
  endif()
  _embed_cxx_string(path_literal "${EMBED_NAME_${i}}")
  _embed_cxx_string(type_literal "${type}")
  string(APPEND entries
    "    {${path_literal}, ${type_literal}, std::string_view(kAsset${i}, ${size})},\n")
endforeach()

if(EMBED_INCLUDE)
  set(declarations "#include \"${EMBED_INCLUDE}\"\n")
  set(struct_definition "")
else()
  set(declarations "")
  set(struct_definition
    "struct EmbeddedAsset {\n  std::string_view path, content_type, body;\n};\n\n")
endif()

set(content "// Generated by cmake/EmbedAssets.cmake. Do not edit.
${declarations}
#include <span>
#include <string_view>

namespace ${EMBED_NAMESPACE} {
${struct_definition}namespace {

${arrays}constexpr EmbeddedAsset kAssets[] = {
${entries}};

}  // namespace

std::span<const EmbeddedAsset> EmbeddedAssets() { return kAssets; }

}  // namespace ${EMBED_NAMESPACE}
")

# Always written: the step only runs when an input changed, and leaving the
# timestamp alone would make Makefile builds rerun it every time.
file(WRITE "${EMBED_OUTPUT}" "${content}")
