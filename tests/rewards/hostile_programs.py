"""Hostile generated programs: each tries to hang, exhaust, escape or fake a pass. None may ever pass.

Placeholders MARKER, SECRET, PORT, CANARY and CANARYDIR are filled in by the test. `tests` are test_list
assertions (function mode) or (stdin, expected stdout) pairs (stdio mode).
"""

T = ("assert f(2) == 4",)
TOKEN = ("assert ok(1)",)

FUNCTION = {
  "infinite_loop": ("while True:\n    pass\n", T),
  "loop_inside_tested_function": ("def f(x):\n    while True:\n        pass\n", T),
  "sleep_forever": ("import time\ntime.sleep(10**6)\n", T),
  "spinning_threads": (
    "import threading\ndef spin():\n    while True:\n        pass\n"
    "for _ in range(6):\n    threading.Thread(target=spin).start()\ndef f(x):\n    return 0\n", T),
  "fork_bomb": ("import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n", T),
  "subprocess_bomb": (
    "import subprocess, sys\nkids = []\nwhile True:\n    try:\n"
    "        kids.append(subprocess.Popen([sys.executable, '-c', 'while True: pass', 'MARKER']))\n"
    "    except OSError:\n        pass\n", T),
  "memory_bomb_alloc": ("x = bytearray(16 * 2**30)\n", T),
  "memory_bomb_growth": ("xs = []\nwhile True:\n    xs.append(' ' * 2**24)\n", T),
  "recursion_bomb": ("def r(n):\n    return r(n + 1)\nr(0)\n", T),
  "deep_recursion_crash": ("import sys\nsys.setrecursionlimit(10**8)\ndef r(n):\n    return r(n + 1)\nr(0)\n", T),
  "stdout_flood_100mb": ("import sys\nchunk = 'x' * 2**20\nfor _ in range(100):\n    sys.stdout.write(chunk)\n", T),
  "stderr_flood_100mb": ("import os\nchunk = b'x' * 2**20\nfor _ in range(100):\n    os.write(2, chunk)\n", T),
  "disk_fill": (
    "i = 0\nwhile True:\n    with open(f'fill{i}', 'wb') as fh:\n        fh.write(b'x' * 2**23)\n    i += 1\n", T),
  "fd_exhaustion": ("files = []\nwhile True:\n    files.append(open('/dev/null'))\n", T),
  "thread_exhaustion": (
    "import threading, time\nts = []\nwhile True:\n    t = threading.Thread(target=time.sleep, args=(100,))\n"
    "    t.start()\n    ts.append(t)\n", T),
  "write_outside": (
    "for p in ['CANARY', 'CANARYDIR/new-MARKER', '/tmp/MARKER-new', '/dev/shm/MARKER-new', '/var/tmp/MARKER-new']:\n"
    "    try:\n        with open(p, 'w') as fh:\n            fh.write('pwned')\n"
    "    except OSError:\n        pass\n", T),
  "delete_outside": (
    "import os, shutil\nshutil.rmtree('CANARYDIR', ignore_errors=True)\n"
    "for call in (lambda: os.remove('CANARY'), lambda: os.rename('CANARY', '/tmp/MARKER-moved'),\n"
    "             lambda: os.chmod('CANARY', 0o777), lambda: os.truncate('CANARY', 0)):\n"
    "    try:\n        call()\n    except OSError:\n        pass\n", T),
  "read_env_secret": (
    "import os\ndef leak():\n    found = os.environ.get('LRL_HOSTILE_SECRET', '')\n"
    "    for name in os.listdir('/proc'):\n        try:\n"
    "            with open(f'/proc/{name}/environ', 'rb') as fh:\n                data = fh.read()\n"
    "        except OSError:\n            continue\n"
    "        for item in data.split(b'\\0'):\n"
    "            if item.startswith(b'LRL_HOSTILE_SECRET='):\n                found = item.split(b'=', 1)[1].decode()\n"
    "    return found\n", ("assert leak() == 'SECRET'",)),
  "open_socket": (
    "import socket\ndef connected():\n    s = socket.socket()\n    s.settimeout(0.5)\n"
    "    s.connect(('127.0.0.1', PORT))\n    s.sendall(b'MARKER')\n    return True\n",
    ("assert connected() == True",)),
  "kill_parent": ("import os, signal\nos.kill(os.getppid(), signal.SIGKILL)\ndef f(x):\n    return x * 2\n", T),
  "kill_ancestors": (
    "import os, signal\nkilled = 0\npid = os.getppid()\nwhile pid > 1:\n"
    "    with open(f'/proc/{pid}/status') as fh:\n"
    "        parent = int(fh.read().split('PPid:')[1].split()[0])\n"
    "    try:\n        os.kill(pid, signal.SIGKILL)\n        killed += 1\n    except OSError:\n        pass\n"
    "    pid = parent\ndef f(x):\n    return 4 if killed else 0\n", T),
  "kill_every_process": (
    "import os, signal, time\nparent = os.getppid()\ntry:\n    os.kill(-1, signal.SIGKILL)\nexcept OSError:\n"
    "    pass\ntime.sleep(0.05)\ndef f(x):\n    return 0 if os.path.exists(f'/proc/{parent}') else 4\n", T),
  "stop_the_harness": ("import os, signal\nos.kill(os.getppid(), signal.SIGSTOP)\ndef f(x):\n    return x * 2\n", T),
  "ignore_sigterm_and_sigxcpu": (
    "import signal\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\nsignal.signal(signal.SIGXCPU, signal.SIG_IGN)\n"
    "while True:\n    pass\n", T),
  "raise_rlimits": (
    "import resource\nfor r in (resource.RLIMIT_CPU, resource.RLIMIT_AS, resource.RLIMIT_NPROC):\n"
    "    try:\n        resource.setrlimit(r, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))\n"
    "    except (ValueError, OSError):\n        pass\nwhile True:\n    pass\n", T),
  "ctypes_segfault": ("import ctypes\nctypes.string_at(0)\n", T),
  "detached_child": (
    "import os, sys\nif os.fork() == 0:\n    os.setsid()\n    if os.fork() == 0:\n"
    "        os.execv(sys.executable, [sys.executable, '-c', 'import time\\nwhile True: time.sleep(1)', 'MARKER'])\n"
    "    os._exit(0)\ndef f(x):\n    return 0\n", T),
  "become_root": ("import os\nos.setuid(0)\ndef f(x):\n    return x * 2\n", T),
  "sys_exit_zero_before_tests": ("import sys\nsys.exit(0)\n", T),
  "os_exit_zero_before_tests": ("import os\nos._exit(0)\n", T),
  "exit_builtin_before_tests": ("exit()\n", T),
  "sys_exit_inside_tested_function": ("import sys\ndef f(x):\n    sys.exit(0)\n", T),
  "os_exit_inside_tested_function": ("import os\ndef f(x):\n    os._exit(0)\n", T),
  "raise_keyboard_interrupt": ("raise KeyboardInterrupt\n", T),
  "patch_exit_hooks": (
    "import atexit, os, sys\nsys.excepthook = lambda *a: None\nsys.exit = lambda *a: None\n"
    "atexit.register(lambda: os._exit(0))\nraise RuntimeError('boom')\n", T),
  "replace_builtins_and_assert_error": (
    "import builtins\nclass Fake(Exception):\n    pass\nbuiltins.AssertionError = Fake\n"
    "builtins.sorted = lambda *a, **k: [1, 2, 3]\nbuiltins.len = lambda x: 3\nbuiltins.isinstance = lambda *a: True\n"
    "def f(x):\n    return None\n",
    ("assert sorted(f([3, 1, 2])) == [1, 2, 3]", "x = f('abc')\nassert len(x) == 3", "assert f(2) == 4")),
  "always_equal_object": (
    "class AE:\n    def __eq__(self, other):\n        return True\n    __hash__ = object.__hash__\n"
    "def f(x):\n    return AE()\n", ("assert f(2) == 4", "assert f(3) == f(4)", "r = f(1)\nassert r == 5")),
  "always_equal_int_subclass": (
    "class I(int):\n    def __eq__(self, other):\n        return True\n    __hash__ = int.__hash__\n"
    "def f(x):\n    return I(0)\n", ("assert f(2) == 4", "assert f(2) == f(9)")),
  "forged_truthiness": ("class T:\n    def __bool__(self):\n        return True\ndef ok(x):\n    return T()\n", TOKEN),
  "print_fake_pass_markers": (
    "print('PASS')\nprint('all tests passed: 1/1')\nprint('0 pass 0')\nprint(' end')\n", T),
  "forge_verdict_and_report_fds": (
    "import os\nfor fd in range(3, 256):\n    for msg in (b'P', b'V4', b'x 0 pass 0\\n', b'x end\\n'):\n"
    "        try:\n            os.write(fd, msg)\n        except OSError:\n            pass\nos._exit(0)\n",
    T + TOKEN),
  "close_all_fds": (
    "import os\nfor fd in range(256):\n    try:\n        os.close(fd)\n    except OSError:\n        pass\n"
    "def f(x):\n    return x * 2\ndef ok(x):\n    return True\n", T + TOKEN),
  "frame_walk_for_a_token": (
    "import os, sys\ndef f(x):\n    frame = sys._getframe(1)\n    while frame is not None:\n"
    "        token, w = frame.f_locals.get('token'), frame.f_locals.get('w')\n"
    "        if isinstance(token, bytes) and isinstance(w, int):\n            os.write(w, b'P' + token)\n"
    "            os._exit(0)\n        frame = frame.f_back\n    return 0\n", T),
  "huge_result": ("def f(x):\n    return list(range(10**7))\n", ("assert f(1) == [0]",)),
  "forged_arithmetic_dunders": (  # HumanEval/4's check: abs(candidate(x) - y) < 1e-6
    "class F:\n    def __sub__(self, other):\n        return self\n    def __abs__(self):\n        return 0.0\n"
    "    def __lt__(self, other):\n        return True\n    def __float__(self):\n        return 0.5\n"
    "def f(x):\n    return F()\n",
    ("assert abs(f([1.0, 2.0, 3.0]) - 2.0/3.0) < 1e-6", "assert f(1) < 1e-6", "assert float(f(1)) == 0.5")),
  "patch_harness_globals": (
    "import __main__\nfor name in dir(__main__):\n    if callable(getattr(__main__, name)):\n"
    "        setattr(__main__, name, lambda *a, **k: True)\nclass R:\n    def __repr__(self):\n        return '4'\n"
    "def f(x):\n    return R()\n", T + ("assert f(2) == f(3) + 1",)),
  "swap_harness_code": (
    "import __main__\nfor name in dir(__main__):\n    fn = getattr(__main__, name)\n    try:\n"
    "        fn.__code__ = (lambda *a, **k: True).__code__\n    except Exception:\n        pass\n"
    "def f(x):\n    return 5\n", T + ("assert f(2) == f(3) + 1",)),
  "patch_builtins": (
    "import builtins\nbuiltins.repr = lambda v: '4'\nbuiltins.eval = lambda *a, **k: 4\n"
    "builtins.abs = lambda v: 0\nbuiltins.type = lambda v: int\ndef f(x):\n    return 5\n",
    T + ("assert abs(f(1) - 9) < 1",)),
  "shadow_builtin_names": (
    "abs = lambda v: 0.0\nsorted = lambda v: [1, 2]\ndef f(x):\n    return 7.0\n",
    ("assert abs(f([1.0]) - 0.5) < 1e-6", "assert sorted(f(1)) == [1, 2]")),
  "patch_stdlib_modules": (
    "import math, operator, sys\nmath.isclose = lambda *a, **k: True\nmath.fabs = lambda v: 0.0\n"
    "operator.eq = lambda a, b: True\nsys.modules['cmath'] = math\ndef f(x):\n    return 7.0\n",
    ("import math\nassert math.isclose(f(1), 0.5)", "import math\nassert math.fabs(f(1) - 0.5) < 1e-4",
     "import operator\nassert operator.eq(f(1), 0.5)")),
  "forge_value_verdict": (
    "import os\ndef f(x):\n    for fd in range(3, 256):\n        try:\n            os.write(fd, b'V4')\n"
    "        except OSError:\n            pass\n    os._exit(0)\n", T),
  "heap_walk_for_a_token": (
    "import gc, os\ndef f(x):\n    for obj in gc.get_objects():\n        if isinstance(obj, dict) and 'token' in obj:\n"
    "            os.write(obj.get('w', 1), b'V' + obj['token'] + b'4')\n    return 0\n", T),
}

STDIO = {
  "stdio_output_flood": (
    "import sys\nchunk = '4\\n' * 2**19\nfor _ in range(100):\n    sys.stdout.write(chunk)\n", [("2\n", "4\n")]),
  "stdio_infinite_loop_after_output": ("print(4, flush=True)\nwhile True:\n    pass\n", [("2\n", "4\n")]),
  "stdio_os_exit_before_output": ("import os\nos._exit(0)\nprint(4)\n", [("2\n", "4\n")]),
  "stdio_crash_after_output": ("import ctypes\nprint(4, flush=True)\nctypes.string_at(0)\n", [("2\n", "4\n")]),
}
