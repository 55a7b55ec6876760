import os

__version__ = "0.1.0"

# ovs.poller imports eventlet (installed for os-ken) to ask whether it monkey-patched select,
# and eventlet then loads its green DNS resolver (dnspython): a quarter of a second of every
# start of the agent and the tools, for nothing (os-ken runs on native threads here and no
# eventlet socket is used).
os.environ.setdefault("EVENTLET_NO_GREENDNS", "yes")
