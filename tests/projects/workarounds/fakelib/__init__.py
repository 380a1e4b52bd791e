"""A library that has fixed its reload problems: its workarounds are off."""
