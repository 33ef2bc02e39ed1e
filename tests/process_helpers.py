"""Running several processes of one job on localhost in a test."""
import socket


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
