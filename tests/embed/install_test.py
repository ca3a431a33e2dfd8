"""embed.install: the installed package, used the way an outside project would.

1. `cmake --install` the build tree into a temporary prefix;
2. configure examples/ as a separate CMake project against that prefix
   (find_package(switchboard) + switchboard::switchboard), build it, and run
   every example (the forwarding ones against the mock upstream);
3. compile examples/c_api.c with nothing but `pkg-config switchboard` and the
   C compiler, and run it;
4. with --python (the build has the Python module), run examples/python/route.py
   with that interpreter against the package installed under the prefix only.

  install_test.py --build-dir B --source-dir S --c-compiler CC --cxx-compiler CXX
                  [--cflags F] [--cxxflags F] [--ldflags F] [--launcher ccache]
                  [--python /usr/bin/python3]
"""

import argparse
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile

from mock_upstream import MockUpstream


def run(command, **kwargs):
    print("+ " + " ".join(shlex.quote(c) for c in command), flush=True)
    return subprocess.run(command, check=True, **kwargs)


def run_example(path, args, expect):
    print("+ " + path + " " + " ".join(args), flush=True)
    out = subprocess.run([path] + args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                         text=True, check=False)
    print(out.stdout)
    if out.returncode != 0:
        raise SystemExit("%s exited with %d" % (path, out.returncode))
    if not re.search(expect, out.stdout, re.S):
        raise SystemExit("%s: output does not match %r" % (path, expect))


def run_python_example(args, prefix, upstream):
    """examples/python/route.py against the package installed under the prefix."""
    site = None
    for root, _, files in os.walk(prefix):
        if os.path.basename(root) == "switchboard" and "__init__.py" in files:
            if any(f.startswith("_switchboard") and f.endswith(".so") for f in files):
                site = os.path.dirname(root)
    if site is None:
        raise SystemExit("the install has no switchboard Python package")
    # Only the prefix: the build tree's module must not be what gets imported.
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    env["PYTHONPATH"] = site
    where = subprocess.run([args.python, "-c", "import switchboard; print(switchboard.__file__)"],
                           env=env, cwd=prefix, check=True, stdout=subprocess.PIPE,
                           text=True).stdout.strip()
    if not os.path.realpath(where).startswith(os.path.realpath(prefix) + os.sep):
        raise SystemExit("python imported switchboard from %s, not the prefix" % where)
    print("+ PYTHONPATH=%s %s route.py %s" % (site, args.python, upstream), flush=True)
    out = subprocess.run([args.python, os.path.join(args.source_dir, "examples", "python",
                                                    "route.py"), upstream],
                         env=env, cwd=prefix, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                         text=True, timeout=120, check=False)
    print(out.stdout)
    if out.returncode != 0:
        raise SystemExit("route.py exited with %d" % out.returncode)
    for expect in ("attempt 2: fallback-1", "HTTP 200 from fallback-1", "event: data: [DONE]"):
        if expect not in out.stdout:
            raise SystemExit("route.py: output lacks %r" % expect)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--build-dir", required=True)
    parser.add_argument("--source-dir", required=True)
    parser.add_argument("--c-compiler", required=True)
    parser.add_argument("--cxx-compiler", required=True)
    parser.add_argument("--cflags", default="")
    parser.add_argument("--cxxflags", default="")
    parser.add_argument("--ldflags", default="")
    parser.add_argument("--launcher", default="")
    parser.add_argument("--python", default="")
    args = parser.parse_args()

    work = tempfile.mkdtemp(prefix="switchboard-install-")
    try:
        prefix = os.path.join(work, "prefix")
        run(["cmake", "--install", args.build_dir, "--prefix", prefix])
        config = None
        pc_dir = None
        for root, _, files in os.walk(prefix):
            if "switchboardConfig.cmake" in files:
                config = root
            if "switchboard.pc" in files:
                pc_dir = root
        if config is None or pc_dir is None:
            raise SystemExit("the install has no switchboardConfig.cmake or switchboard.pc")
        for header in ("switchboard.h", "c_api.h", "storage.h", "router.h", "proxy.h"):
            if not os.path.exists(os.path.join(prefix, "include", "switchboard", header)):
                raise SystemExit("the install lacks include/switchboard/" + header)

        # The examples as an outside project. Only the prefix is given: the
        # package must bring its dependencies (find_dependency) by itself.
        build = os.path.join(work, "examples-build")
        configure = [
            "cmake", "-S", os.path.join(args.source_dir, "examples"), "-B", build, "-G", "Ninja",
            "-DCMAKE_BUILD_TYPE=Debug",
            "-DCMAKE_PREFIX_PATH=" + prefix,
            "-DCMAKE_C_COMPILER=" + args.c_compiler,
            "-DCMAKE_CXX_COMPILER=" + args.cxx_compiler,
            "-DCMAKE_C_FLAGS=" + args.cflags,
            "-DCMAKE_CXX_FLAGS=" + args.cxxflags,
            "-DCMAKE_EXE_LINKER_FLAGS=" + args.ldflags,
        ]
        if args.launcher:
            configure += ["-DCMAKE_C_COMPILER_LAUNCHER=" + args.launcher,
                          "-DCMAKE_CXX_COMPILER_LAUNCHER=" + args.launcher]
        run(configure)
        with open(os.path.join(build, "CMakeCache.txt")) as f:
            cache = f.read()
        found = re.search(r"^switchboard_DIR:PATH=(.*)$", cache, re.M)
        if not found or os.path.realpath(found.group(1)) != os.path.realpath(config):
            raise SystemExit("find_package(switchboard) did not use the installed package: %s"
                             % (found.group(1) if found else "not found"))
        run(["cmake", "--build", build, "-j2"])

        exe = lambda name: os.path.join(build, name)  # noqa: E731
        run_example(exe("quickstart"), [], r"request 3:")
        run_example(exe("embed_router"), [], r"east +cooling.*west +error")
        run_example(exe("custom_storage"), [], r"cooldown events: 1")
        with MockUpstream() as mock:
            run_example(exe("forward"), [mock.url + "/v1", "gpt-4o"],
                        r"mock answer for gpt-4o.*data: \[DONE\]")
            run_example(exe("c_api_example"), [mock.url], r"HTTP 200 from fallback-1")

            # One program through pkg-config alone.
            env = dict(os.environ, PKG_CONFIG_PATH=pc_dir)
            flags = subprocess.run(["pkg-config", "--cflags", "--libs", "switchboard"], env=env,
                                   check=True, stdout=subprocess.PIPE, text=True).stdout.split()
            includes = [os.path.realpath(f[2:]) for f in flags if f.startswith("-I")]
            if os.path.realpath(os.path.join(prefix, "include")) not in includes:
                raise SystemExit("pkg-config does not point into the prefix: %s" % flags)
            program = os.path.join(work, "c_api_pkgconfig")
            run([args.c_compiler, "-std=c11", "-Wall", "-Wextra", "-Werror"]
                + shlex.split(args.cflags)
                + [os.path.join(args.source_dir, "examples", "c_api.c"), "-o", program]
                + flags + shlex.split(args.ldflags))
            run_example(program, [mock.url], r"HTTP 200 from fallback-1.*event 5: data: \[DONE\]")

            if args.python:
                run_python_example(args, prefix, mock.url)
        print("install_test: the installed package works from CMake, pkg-config%s"
              % (" and Python" if args.python else ""))
        return 0
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
