"""Models: building blocks, transforms, entropy models and the zoo of shipped checkpoints."""

import warnings

# CompressAI 1.2.8 calls torch.jit.script at import time, which torch >= 2.10 deprecates: noise
# from a dependency, not something a user of xcodec can act on.
DEPENDENCY_NOISE = r".*torch\.jit\.script.* is deprecated"
warnings.filterwarnings("ignore", message=DEPENDENCY_NOISE)
