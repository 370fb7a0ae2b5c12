# The Debian package of tokenwheel (`make deb`; docs/OPERATIONS.md, "Installing the package"):
# the four installed binaries (install rules in tools/CMakeLists.txt), the systemd unit, the
# default config file (a conffile) and the maintainer scripts of packaging/. CPack's DEB
# generator builds it from this build tree: `cpack -G DEB` in the build directory.
#
# The package's dependencies are not listed here: dpkg-shlibdeps reads them off the binaries
# (CPACK_DEBIAN_PACKAGE_SHLIBDEPS), so they match whatever the build linked.

set(TW_PACKAGING_DIR ${CMAKE_SOURCE_DIR}/packaging)

# Absolute destinations: the unit and the config live outside the /usr prefix.
install(FILES ${TW_PACKAGING_DIR}/tokenwheel.service DESTINATION /lib/systemd/system
        PERMISSIONS OWNER_READ OWNER_WRITE GROUP_READ WORLD_READ)
install(FILES ${TW_PACKAGING_DIR}/tokenwheel.json DESTINATION /etc/tokenwheel
        PERMISSIONS OWNER_READ OWNER_WRITE GROUP_READ WORLD_READ)

# A man page per installed binary, made from its --help by Debian's help2man
# (tools/install-deps.sh): part of the default build, so that the package always has them. A
# tree configured without help2man packs no man pages; nor does the TSan build, which no package
# test packs, so that its build never depends on running a TSan binary.
find_program(TW_HELP2MAN help2man)
if(TW_HELP2MAN AND NOT TW_SANITIZE STREQUAL "thread")
  set(TW_MAN_PAGES "")
  foreach(entry "tokenwheeld|the tokenwheel server"
                "tokenwheel|command-line client of tokenwheeld"
                "tokenwheel-crashtest|crash test of tokenwheeld"
                "tokenwheel-bench|tokenwheel against PostgreSQL and Redis")
    string(REPLACE "|" ";" entry "${entry}")
    list(GET entry 0 bin)
    list(GET entry 1 what)
    set(page ${CMAKE_BINARY_DIR}/man/${bin}.1)
    add_custom_command(
      OUTPUT ${page}.gz
      COMMAND ${CMAKE_COMMAND} -E make_directory ${CMAKE_BINARY_DIR}/man
      COMMAND ${TW_HELP2MAN} --no-info --no-discard-stderr --version-string=${PROJECT_VERSION}
              --name=${what} --output=${page} $<TARGET_FILE:${bin}>
      COMMAND gzip -9nf ${page}
      DEPENDS ${bin}
      COMMENT "help2man ${bin}"
      VERBATIM)
    list(APPEND TW_MAN_PAGES ${page}.gz)
  endforeach()
  add_custom_target(tw_man_pages ALL DEPENDS ${TW_MAN_PAGES})
  install(FILES ${TW_MAN_PAGES} DESTINATION share/man/man1)
elseif(NOT TW_HELP2MAN)
  message(STATUS "help2man not found: the package will have no man pages")
endif()

# The package packs what this tree has built: `make deb` builds the binaries first, and the
# package test (tests/package/deb_install_test.sh) packs the binaries of the build it tests
# without building the rest of the tree (benchmarks, tests) that `cpack` would otherwise build.
set(CMAKE_SKIP_INSTALL_ALL_DEPENDENCY TRUE)

set(CPACK_GENERATOR DEB)
set(CPACK_PACKAGE_NAME tokenwheel)
set(CPACK_PACKAGE_VERSION ${PROJECT_VERSION})
set(CPACK_PACKAGE_VENDOR tokenwheel)
set(CPACK_PACKAGE_CONTACT "tokenwheel maintainers <maintainers@users.noreply.r-seed-7cd19708.example>")
set(CPACK_PACKAGE_DESCRIPTION_SUMMARY
    "durable task-token store and timeout engine with an AWS Step Functions-compatible gateway")
set(CPACK_PACKAGING_INSTALL_PREFIX /usr)
# Debian ships stripped binaries; the symbols stay in the build tree.
set(CPACK_STRIP_FILES ON)
set(CPACK_DEBIAN_FILE_NAME DEB-DEFAULT)  # tokenwheel_<version>_<arch>.deb
set(CPACK_DEBIAN_PACKAGE_SECTION net)
set(CPACK_DEBIAN_PACKAGE_PRIORITY optional)
set(CPACK_DEBIAN_PACKAGE_SHLIBDEPS ON)
# postinst creates the user with groupadd / useradd (passwd, Priority: required).
set(CPACK_DEBIAN_PACKAGE_DEPENDS "passwd")
# The extended description (CPack indents it and writes the empty line as " ."); the summary
# above is its first line.
set(CPACK_PACKAGE_DESCRIPTION
    "tokenwheeld keeps task tokens and their timeouts durably in RocksDB and serves them over a
Cap'n Proto API and an AWS JSON 1.0 gateway (AWS CLI, boto3 and AWS SDK activity workers).

This package installs tokenwheeld, the tokenwheel command-line client, tokenwheel-crashtest and
tokenwheel-bench; a systemd unit, tokenwheel.service (not enabled at install), that runs the
server as the system user tokenwheel on /var/lib/tokenwheel; and the default configuration
/etc/tokenwheel/tokenwheel.json, which listens on loopback addresses only.")
set(CPACK_DEBIAN_PACKAGE_CONTROL_EXTRA
    ${TW_PACKAGING_DIR}/conffiles ${TW_PACKAGING_DIR}/postinst ${TW_PACKAGING_DIR}/prerm
    ${TW_PACKAGING_DIR}/postrm)
set(CPACK_DEBIAN_PACKAGE_CONTROL_STRICT_PERMISSION ON)

include(CPack)
