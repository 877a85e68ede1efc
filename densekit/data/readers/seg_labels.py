"""Class lists and raw-label -> train-id tables of the real segmentation datasets (facts, no logic).

Every table maps a raw value found in the dataset's PNG masks to a train id in [0, K) or to 255
(ignore); values a table does not list are not valid for that format and are reported as errors.
"""

from __future__ import annotations

from ...schema import IGNORE_INDEX

# Cityscapes: the 19 evaluated classes in train-id order and the official labelId -> trainId table of
# cityscapesScripts (helpers/labels.py). labelIds 0..33 appear in *_gtFine_labelIds.png; every id whose
# trainId is 255 there (void, parking, rail track, guard rail, bridge, tunnel, polegroup, caravan,
# trailer) is ignored. License plate (id -1) never appears in the PNGs.
CITYSCAPES_CLASSES = (
    "road",
    "sidewalk",
    "building",
    "wall",
    "fence",
    "pole",
    "traffic light",
    "traffic sign",
    "vegetation",
    "terrain",
    "sky",
    "person",
    "rider",
    "car",
    "truck",
    "bus",
    "train",
    "motorcycle",
    "bicycle",
)
CITYSCAPES_LABEL_TO_TRAIN = {
    0: 255,
    1: 255,
    2: 255,
    3: 255,
    4: 255,
    5: 255,
    6: 255,  # unlabeled, ego vehicle, ..., ground
    7: 0,
    8: 1,
    9: 255,
    10: 255,  # road, sidewalk, parking, rail track
    11: 2,
    12: 3,
    13: 4,
    14: 255,
    15: 255,
    16: 255,  # building, wall, fence, guard rail, bridge, tunnel
    17: 5,
    18: 255,
    19: 6,
    20: 7,  # pole, polegroup, traffic light, traffic sign
    21: 8,
    22: 9,
    23: 10,  # vegetation, terrain, sky
    24: 11,
    25: 12,  # person, rider
    26: 13,
    27: 14,
    28: 15,
    29: 255,
    30: 255,  # car, truck, bus, caravan, trailer
    31: 16,
    32: 17,
    33: 18,  # train, motorcycle, bicycle
}

# ADE20K SceneParsing (ADEChallengeData2016): annotation value v in 1..150 is class v-1 in this
# order (objectInfo150.txt, first name of each entry, as mmsegmentation's ADE20KDataset); 0 is
# "other / unlabelled" and is ignored (mmseg's reduce_zero_label).
ADE20K_CLASSES = (
    "wall",
    "building",
    "sky",
    "floor",
    "tree",
    "ceiling",
    "road",
    "bed",
    "windowpane",
    "grass",
    "cabinet",
    "sidewalk",
    "person",
    "earth",
    "door",
    "table",
    "mountain",
    "plant",
    "curtain",
    "chair",
    "car",
    "water",
    "painting",
    "sofa",
    "shelf",
    "house",
    "sea",
    "mirror",
    "rug",
    "field",
    "armchair",
    "seat",
    "fence",
    "desk",
    "rock",
    "wardrobe",
    "lamp",
    "bathtub",
    "railing",
    "cushion",
    "base",
    "box",
    "column",
    "signboard",
    "chest of drawers",
    "counter",
    "sand",
    "sink",
    "skyscraper",
    "fireplace",
    "refrigerator",
    "grandstand",
    "path",
    "stairs",
    "runway",
    "case",
    "pool table",
    "pillow",
    "screen door",
    "stairway",
    "river",
    "bridge",
    "bookcase",
    "blind",
    "coffee table",
    "toilet",
    "flower",
    "book",
    "hill",
    "bench",
    "countertop",
    "stove",
    "palm",
    "kitchen island",
    "computer",
    "swivel chair",
    "boat",
    "bar",
    "arcade machine",
    "hovel",
    "bus",
    "towel",
    "light",
    "truck",
    "tower",
    "chandelier",
    "awning",
    "streetlight",
    "booth",
    "television receiver",
    "airplane",
    "dirt track",
    "apparel",
    "pole",
    "land",
    "bannister",
    "escalator",
    "ottoman",
    "bottle",
    "buffet",
    "poster",
    "stage",
    "van",
    "ship",
    "fountain",
    "conveyer belt",
    "canopy",
    "washer",
    "plaything",
    "swimming pool",
    "stool",
    "barrel",
    "basket",
    "waterfall",
    "tent",
    "bag",
    "minibike",
    "cradle",
    "oven",
    "ball",
    "food",
    "step",
    "tank",
    "trade name",
    "microwave",
    "pot",
    "animal",
    "bicycle",
    "lake",
    "dishwasher",
    "screen",
    "blanket",
    "sculpture",
    "hood",
    "sconce",
    "vase",
    "traffic light",
    "tray",
    "ashcan",
    "fan",
    "pier",
    "crt screen",
    "plate",
    "monitor",
    "bulletin board",
    "shower",
    "radiator",
    "glass",
    "clock",
    "flag",
)
ADE20K_LABEL_TO_TRAIN = {0: IGNORE_INDEX, **{v: v - 1 for v in range(1, 151)}}

# Pascal VOC 2012: SegmentationClass PNGs are palette images whose *indices* are the classes
# (0 background, 1..20 objects) and 255 the "void" border drawn around every object.
VOC_CLASSES = (
    "background",
    "aeroplane",
    "bicycle",
    "bird",
    "boat",
    "bottle",
    "bus",
    "car",
    "cat",
    "chair",
    "cow",
    "diningtable",
    "dog",
    "horse",
    "motorbike",
    "person",
    "pottedplant",
    "sheep",
    "sofa",
    "train",
    "tvmonitor",
)
VOC_LABEL_TO_TRAIN = {**{v: v for v in range(21)}, 255: IGNORE_INDEX}


def voc_palette() -> list[int]:
    """The 256-colour VOC palette (the devkit's bit-interleaving colour map), flat [r, g, b, ...]."""
    palette = []
    for index in range(256):
        r = g = b = 0
        c = index
        for shift in range(7, -1, -1):
            r |= ((c >> 0) & 1) << shift
            g |= ((c >> 1) & 1) << shift
            b |= ((c >> 2) & 1) << shift
            c >>= 3
        palette += [r, g, b]
    return palette


assert len(CITYSCAPES_CLASSES) == 19 and sorted(set(CITYSCAPES_LABEL_TO_TRAIN.values()) - {255}) == list(range(19))
assert len(ADE20K_CLASSES) == 150 and len(VOC_CLASSES) == 21
