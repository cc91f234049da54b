"""Exports for other tools: a bundle as a WSInfer / QuPath model folder (TorchScript).

Exporting needs torch (the ``interop`` extra); nothing on the serving side imports this
folder. What other tools give back to idcscan (QuPath annotations as slide regions) is read in
``idcscan.maps.regions``, where slide mode can use it without torch.
"""
