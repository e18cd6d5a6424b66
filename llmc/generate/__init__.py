"""Generation on any device: the sampling loop, and the reference interpreter as a device for the
imported programs and for the accelerator's lowered step program. Needs only NumPy and the IR."""
