"""Pure nn.Modules: backbones (one contract), heads and assemblies. No lightning, hydra or data here."""

from .assembly import DenseModel, create_model, pad_to_multiple
from .backbones import BACKBONES, PRESETS, Backbone, TimmBackbone, create_backbone, load_trunk_weights, read_state_dict
from .flow import CompactFlowNet, FlowPyramid, create_flow_model
from .heads import HEADS, LRASPPHead, create_head
from .lightm import LightMDecoder, LightMEncoder, LightMUNet
from .mobilenet import MobileNetV3Backbone
from .revunet3d import RevMB3dEncoder, RevUNet3dHead
from .tinyvit import MobileSAMEncoder

# The registry beyond timm's MCi presets (backbones.py): name -> class, and its preset arguments.
BACKBONES.update(
    mobilenetv3_large=MobileNetV3Backbone, mobilesam=MobileSAMEncoder, lightm=LightMEncoder, lightm3d=LightMEncoder
)
PRESETS.update(
    mobilenetv3_large={"variant": "large"},
    mobilesam={},
    lightm={"dims": 2, "in_channels": 3},
    lightm3d={"dims": 3, "in_channels": 4},
)
HEADS["lightm"] = LightMDecoder  # backbone=lightm head=lightm is the released LightM-UNet
BACKBONES["flow_pyramid"] = FlowPyramid  # registered here, not in backbones.py, which flow.py imports
BACKBONES["revmb3d"], HEADS["revunet3d"] = RevMB3dEncoder, RevUNet3dHead  # reversible MBConv 3D U-Net

__all__ = [
    "BACKBONES", "HEADS", "PRESETS", "Backbone", "CompactFlowNet", "DenseModel", "FlowPyramid", "LRASPPHead", "LightMDecoder", "LightMEncoder",
    "LightMUNet", "MobileNetV3Backbone", "MobileSAMEncoder", "RevMB3dEncoder", "RevUNet3dHead", "TimmBackbone", "create_backbone", "create_head",
    "create_flow_model", "create_model", "load_trunk_weights", "pad_to_multiple", "read_state_dict",
]
