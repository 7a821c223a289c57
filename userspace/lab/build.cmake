# The lab (userspace/lab): topology, daemon, kubelet, EndpointSlice
# controller, DNS and the `kpx lab` commands. echo.cpp (the echo server and
# probe) lives in kpx_core: tests and bench use it without the rest.
file(GLOB KPX_LAB_SOURCES CONFIGURE_DEPENDS ${CMAKE_SOURCE_DIR}/userspace/lab/*.cpp)
list(REMOVE_ITEM KPX_LAB_SOURCES ${CMAKE_SOURCE_DIR}/userspace/lab/echo.cpp)
add_library(kpx_lab STATIC ${KPX_LAB_SOURCES})
target_compile_options(kpx_lab PRIVATE ${KPX_WARNINGS})
target_link_libraries(kpx_lab PUBLIC kpx_core kpx_k8s kpx_apiserver kpx_log PRIVATE yaml-cpp)

# The lab's control plane (EndpointSlice controller, DNS, env discovery),
# tested without root.
kpx_test(kpx_lab_tests unit tests/unit/endpointslice_test.cpp tests/unit/service_env_test.cpp
  tests/unit/dns_test.cpp tests/unit/lab_plan_test.cpp)
target_link_libraries(kpx_lab_tests PRIVATE kpx_lab resolv)
