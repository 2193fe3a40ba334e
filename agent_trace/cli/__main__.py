import sys

from agent_trace.cli import main

sys.exit(main())
