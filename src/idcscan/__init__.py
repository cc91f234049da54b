"""idcscan: find Invasive Ductal Carcinoma (IDC) in H&E breast histopathology images.

Research use only: idcscan is not a medical device and must not be used for diagnosis.
"""

__version__ = "0.1.0"

DISCLAIMER = (
    "Research use only. idcscan is not a medical device and its output is not a diagnosis; "
    "every finding must be reviewed by a qualified pathologist."
)

__all__ = ["DISCLAIMER", "__version__"]
