"""Medium access: who gets which resource blocks, and for how long."""
