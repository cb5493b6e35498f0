"""What a run learns: one module per task (generation, semi-supervised, paired and unpaired
translation)."""
