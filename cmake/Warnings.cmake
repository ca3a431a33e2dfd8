# switchboard_warnings(target): our warning set, on our targets only.
function(switchboard_warnings target)
  target_compile_options(${target} PRIVATE -Wall -Wextra -Wpedantic)
  if(SWITCHBOARD_WERROR)
    target_compile_options(${target} PRIVATE -Werror)
  endif()
endfunction()
