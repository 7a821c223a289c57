# Kubernetes objects (userspace/k8s), the model and compute() (userspace/proxy).
# Included from the top-level CMakeLists.txt.
file(GLOB KPX_K8S_SOURCES CONFIGURE_DEPENDS
     ${CMAKE_SOURCE_DIR}/userspace/k8s/*.cpp
     ${CMAKE_SOURCE_DIR}/userspace/proxy/*.cpp)
add_library(kpx_k8s STATIC ${KPX_K8S_SOURCES})
target_include_directories(kpx_k8s PUBLIC ${CMAKE_SOURCE_DIR}/userspace)
target_compile_options(kpx_k8s PRIVATE ${KPX_WARNINGS})
target_link_libraries(kpx_k8s PUBLIC kpx_core nlohmann_json::nlohmann_json)

kpx_test(kpx_k8s_unit_tests unit tests/unit/k8s_decode_test.cpp tests/unit/compute_test.cpp)
if(TARGET kpx_k8s_unit_tests)
  target_link_libraries(kpx_k8s_unit_tests PRIVATE kpx_k8s)
endif()
