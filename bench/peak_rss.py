"""Run a command and print its peak resident memory in kB: ``python peak_rss.py CMD [ARGS...]``.

On Linux a child's ``ru_maxrss`` starts at its parent's resident size at the fork (the high-water
mark survives ``exec``), so a large process cannot measure a small child directly: this small
process runs the command for it. The command's stdout is discarded, its stderr passed through;
the peak is the one line this prints, and the command's exit code is this one's.
"""

import resource
import subprocess
import sys

code = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL).returncode
print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
sys.exit(code)
