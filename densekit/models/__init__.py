"""Pure nn.Modules: backbones (one contract), heads and assemblies. No lightning, hydra or data here.

Every module of this package is imported here (``pkgutil.iter_modules``), so a backbone or head registers
itself in ``BACKBONES`` / ``HEADS`` by being defined in a file of this folder: adding one edits no other file.
"""

import importlib
import pkgutil

from .assembly import DenseModel, DepthActivation, VolumeModel, assemble, pad_to_multiple
from .backbones import BACKBONES, Backbone, TimmBackbone, create_backbone, load_trunk_weights, read_state_dict
from .flow import CompactFlowNet, create_flow_model
from .flow_pyramid import FlowPyramid
from .heads import HEADS, LRASPPHead, create_head
from .lightm import LightMDecoder, LightMEncoder, LightMUNet
from .mobilenet import MobileNetV3Backbone
from .mobilesam import MobileSAMEncoder
from .revunet3d import RevMB3dEncoder, RevUNet3dHead

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")

__all__ = [
    "BACKBONES",
    "HEADS",
    "Backbone",
    "CompactFlowNet",
    "DenseModel",
    "DepthActivation",
    "FlowPyramid",
    "LRASPPHead",
    "LightMDecoder",
    "LightMEncoder",
    "LightMUNet",
    "MobileNetV3Backbone",
    "MobileSAMEncoder",
    "RevMB3dEncoder",
    "RevUNet3dHead",
    "TimmBackbone",
    "VolumeModel",
    "assemble",
    "create_backbone",
    "create_flow_model",
    "create_head",
    "load_trunk_weights",
    "pad_to_multiple",
    "read_state_dict",
]
