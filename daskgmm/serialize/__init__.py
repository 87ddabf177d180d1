"""Files daskgmm writes and reads back: saved models and checkpoints."""
