# Runs a command in a pseudo-terminal, as a person at a terminal would: for each step, waits for
# a text in the output and then types the bytes given (a Ctrl-C is "\u0003", a Ctrl-D "\u0004").
# Prints one JSON object: the exit code (null when it was still running TIMEOUT_S after the last
# step and had to be killed) and everything the terminal showed.
# Usage: pty-session.py TIMEOUT_S STEPS_JSON COMMAND [ARG...]   (STEPS_JSON: [["Password: ", "secret\r"], ...])
import json
import os
import pty
import select
import signal
import sys
import time

timeout_s = float(sys.argv[1])
steps = json.loads(sys.argv[2])
pid, fd = pty.fork()
if pid == 0:
    os.execvp(sys.argv[3], sys.argv[3:])

output = b""


def read_until(predicate, deadline):
    global output
    while not predicate() and time.time() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.05)
        if ready:
            try:
                chunk = os.read(fd, 4096)
            except OSError:
                return
            if not chunk:
                return
            output += chunk


for wait_for, send in steps:
    read_until(lambda: wait_for.encode() in output, time.time() + timeout_s)
    time.sleep(0.2)
    os.write(fd, send.encode())

deadline = time.time() + timeout_s
code = None
while time.time() < deadline:
    read_until(lambda: False, time.time() + 0.1)
    done, status = os.waitpid(pid, os.WNOHANG)
    if done != 0:
        code = os.waitstatus_to_exitcode(status)
        break
if code is None:
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
read_until(lambda: False, time.time() + 0.2)
print(json.dumps({"code": code, "output": output.decode(errors="replace")}))
