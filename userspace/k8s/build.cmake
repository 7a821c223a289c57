# Kubernetes objects and API client (userspace/k8s), the model and compute()
# (userspace/proxy), and the log they write to (userspace/log).
# Included from the top-level CMakeLists.txt.
find_package(cpprestsdk REQUIRED)
find_package(yaml-cpp REQUIRED)
find_package(OpenSSL REQUIRED)

add_library(kpx_log STATIC ${CMAKE_SOURCE_DIR}/userspace/log/log.cpp)
target_include_directories(kpx_log PUBLIC ${CMAKE_SOURCE_DIR}/userspace)
target_compile_options(kpx_log PRIVATE ${KPX_WARNINGS})

file(GLOB KPX_K8S_SOURCES CONFIGURE_DEPENDS
     ${CMAKE_SOURCE_DIR}/userspace/k8s/*.cpp
     ${CMAKE_SOURCE_DIR}/userspace/proxy/*.cpp)
add_library(kpx_k8s STATIC ${KPX_K8S_SOURCES})
target_include_directories(kpx_k8s PUBLIC ${CMAKE_SOURCE_DIR}/userspace)
target_compile_options(kpx_k8s PRIVATE ${KPX_WARNINGS})
target_link_libraries(kpx_k8s PUBLIC kpx_core kpx_log nlohmann_json::nlohmann_json
                      PRIVATE cpprestsdk::cpprest yaml-cpp OpenSSL::SSL OpenSSL::Crypto)

kpx_test(kpx_k8s_unit_tests unit tests/unit/k8s_decode_test.cpp tests/unit/compute_test.cpp
  tests/unit/compute_ports_test.cpp tests/unit/validate_test.cpp tests/unit/topology_test.cpp
  tests/unit/model_list_test.cpp)
if(TARGET kpx_k8s_unit_tests)
  target_link_libraries(kpx_k8s_unit_tests PRIVATE kpx_k8s)
endif()

# The API client: kubeconfig parsing, and reflectors against `kpx apiserver`.
kpx_test(kpx_k8s_client_tests unit tests/unit/kubeconfig_test.cpp tests/unit/reflector_test.cpp
  tests/unit/reflector_client_go_test.cpp)
if(TARGET kpx_k8s_client_tests)
  target_link_libraries(kpx_k8s_client_tests PRIVATE kpx_k8s)
endif()
