# switchboard_warnings(target): our warning set, on our targets only.
function(switchboard_warnings target)
  target_compile_options(${target} PRIVATE -Wall -Wextra -Wpedantic
    # GCC 12 flags designated initializers that leave members at their defaults.
    -Wno-missing-field-initializers)
  if(SWITCHBOARD_WERROR)
    target_compile_options(${target} PRIVATE -Werror)
  endif()
endfunction()
