"""idcscan: find Invasive Ductal Carcinoma (IDC) in H&E breast histopathology images.

Research use only: idcscan is not a medical device and must not be used for diagnosis.
"""

import os

# ONNX Runtime >= 1.29 collects usage telemetry on Linux and macOS (a device id and an event
# cache under ~/.cache/Microsoft, uploaded when the network allows). Slides and patches stay
# on the machine that scores them, and so does anything about their scoring: opted out before
# ONNX Runtime starts, unless the user set the variable themselves.
os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")

__version__ = "0.1.0"

DISCLAIMER = (
    "Research use only. idcscan is not a medical device and its output is not a diagnosis; "
    "every finding must be reviewed by a qualified pathologist."
)

__all__ = ["DISCLAIMER", "__version__"]
