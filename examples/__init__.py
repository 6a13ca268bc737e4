"""Example models for the command line, e.g. ``delegate-sdk inspect examples.models:conv_net --backends qnn``."""
