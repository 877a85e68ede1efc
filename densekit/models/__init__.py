"""Pure nn.Modules: backbones (one contract), heads and assemblies. No lightning, hydra or data here."""

from .assembly import DenseModel, create_model, pad_to_multiple
from .backbones import BACKBONES, Backbone, TimmBackbone, create_backbone, load_trunk_weights, read_state_dict
from .heads import HEADS, LRASPPHead, create_head

__all__ = [
    "BACKBONES", "HEADS", "Backbone", "DenseModel", "LRASPPHead", "TimmBackbone", "create_backbone",
    "create_head", "create_model", "load_trunk_weights", "pad_to_multiple", "read_state_dict",
]

from .backbones import PRESETS as _PRESETS  # noqa: E402
from .mobilenet import MobileNetV3Backbone  # noqa: E402

BACKBONES["mobilenetv3_large"] = MobileNetV3Backbone
_PRESETS["mobilenetv3_large"] = {"variant": "large"}

from .tinyvit import MobileSAMEncoder  # noqa: E402

BACKBONES["mobilesam"] = MobileSAMEncoder
_PRESETS["mobilesam"] = {}

from .heads import HEADS as _HEADS  # noqa: E402
from .lightm import LightMDecoder, LightMEncoder, LightMUNet  # noqa: E402

BACKBONES["lightm"] = LightMEncoder
_PRESETS["lightm"] = {"dims": 2, "in_channels": 3}
BACKBONES["lightm3d"] = LightMEncoder
_PRESETS["lightm3d"] = {"dims": 3, "in_channels": 4}
_HEADS["lightm"] = LightMDecoder  # backbone=lightm head=lightm is the released LightM-UNet
