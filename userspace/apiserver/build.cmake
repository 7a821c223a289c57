# The in-memory Kubernetes API server (userspace/apiserver), `kpx apiserver`.
# Included from the top-level CMakeLists.txt. Depends on nothing of kpx_core.
find_package(Threads REQUIRED)
file(GLOB KPX_APISERVER_SOURCES CONFIGURE_DEPENDS ${CMAKE_SOURCE_DIR}/userspace/apiserver/*.cpp)
add_library(kpx_apiserver STATIC ${KPX_APISERVER_SOURCES})
target_include_directories(kpx_apiserver PUBLIC ${CMAKE_SOURCE_DIR}/userspace)
target_compile_options(kpx_apiserver PRIVATE ${KPX_WARNINGS})
target_link_libraries(kpx_apiserver PUBLIC nlohmann_json::nlohmann_json Threads::Threads)

# The CLI (cli.cpp) starts the server: wherever cli.cpp is compiled links it
# (kpx_cli does so itself; an older layout had cli.cpp in kpx_core).
get_target_property(KPX_CORE_SOURCES kpx_core SOURCES)
if("userspace/cli/cli.cpp" IN_LIST KPX_CORE_SOURCES)
  target_link_libraries(kpx_core PUBLIC kpx_apiserver)
endif()
target_link_libraries(kpx PRIVATE kpx_apiserver)

kpx_test(kpx_apiserver_tests unit tests/unit/apiserver_test.cpp tests/unit/kubectl_test.cpp
  tests/unit/apiserver_registry_test.cpp)
if(TARGET kpx_apiserver_tests)
  # kubectl_test also runs the CLI in-process (cli::run).
  target_link_libraries(kpx_apiserver_tests PRIVATE kpx_apiserver $<TARGET_NAME_IF_EXISTS:kpx_cli>)
endif()
