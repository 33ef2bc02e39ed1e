"""Running several processes of one job on localhost in a test, and processes that see several
CPU devices."""
import os
import socket


def host_devices_flags(count: int) -> str:
  """XLA_FLAGS giving a process `count` CPU devices. XLA aborts a process whose device threads
  reach a collective more than 40 s apart; on a loaded 2-core CI machine 8 device threads can
  (CI aborted test_parallel's report: "Expected 8 threads to join the rendezvous, but only 7 of
  them arrived on time"), so the limit is raised to the tests' own 600-s subprocess timeout."""
  return (f"--xla_force_host_platform_device_count={count}"
          " --xla_cpu_collective_call_terminate_timeout_seconds=600"
          " --xla_cpu_collective_timeout_seconds=600")


def host_devices_env(count: int) -> dict:
  """This process's environment for a subprocess that sees `count` CPU devices."""
  return {**os.environ, "XLA_FLAGS": host_devices_flags(count)}


def free_port() -> int:
  with socket.socket() as probe:
    probe.bind(("127.0.0.1", 0))
    return probe.getsockname()[1]


def finish(processes, timeout=300):
  """Every process's output once all have exited with code 0; kills every one of them if any
  fails or the timeout passes, so that a stuck collective cannot hang the suite."""
  try:
    outputs = [process.communicate(timeout=timeout)[0] for process in processes]
  finally:
    for process in processes:
      if process.poll() is None:
        process.kill()
        process.wait()
  for process, output in zip(processes, outputs):
    assert process.returncode == 0, output[-3000:]
  return outputs
