"""A library without a clear module: its workarounds run."""
