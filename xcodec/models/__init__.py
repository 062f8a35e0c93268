"""Models: building blocks, transforms, entropy models and the zoo of shipped checkpoints."""

import warnings

# CompressAI 1.2.8 calls torch.jit.script at import time, which torch >= 2.10 deprecates.
warnings.filterwarnings("ignore", message=r".*torch\.jit\.script.* is deprecated")
