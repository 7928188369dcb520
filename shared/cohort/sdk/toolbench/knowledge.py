"""The bundled knowledge base `kb_lookup` answers from: countries (capital) and mountains (height).

Plain Python data so it ships with the package. Every entity belongs to exactly one split: train
queries mention only `train` entities, held-out queries only `heldout` ones, so held-out success
measures generalization to entities the policy never saw. Heights are summit elevations in metres
(rounded, widely cited figures); the environment only needs them to be fixed and distinct.
"""

from __future__ import annotations

from types import MappingProxyType

# name -> (capital, split)
_COUNTRIES: dict[str, tuple[str, str]] = {
    # train
    "France": ("Paris", "train"),
    "Germany": ("Berlin", "train"),
    "Italy": ("Rome", "train"),
    "Spain": ("Madrid", "train"),
    "Portugal": ("Lisbon", "train"),
    "Norway": ("Oslo", "train"),
    "Sweden": ("Stockholm", "train"),
    "Finland": ("Helsinki", "train"),
    "Denmark": ("Copenhagen", "train"),
    "Poland": ("Warsaw", "train"),
    "Austria": ("Vienna", "train"),
    "Greece": ("Athens", "train"),
    "Ireland": ("Dublin", "train"),
    "Hungary": ("Budapest", "train"),
    "Egypt": ("Cairo", "train"),
    "Japan": ("Tokyo", "train"),
    "Thailand": ("Bangkok", "train"),
    "Peru": ("Lima", "train"),
    "Argentina": ("Buenos Aires", "train"),
    "Canada": ("Ottawa", "train"),
    "Australia": ("Canberra", "train"),
    "Russia": ("Moscow", "train"),
    "Cuba": ("Havana", "train"),
    "Nepal": ("Kathmandu", "train"),
    # held-out
    "Belgium": ("Brussels", "heldout"),
    "Netherlands": ("Amsterdam", "heldout"),
    "Switzerland": ("Bern", "heldout"),
    "Czechia": ("Prague", "heldout"),
    "Turkey": ("Ankara", "heldout"),
    "Iran": ("Tehran", "heldout"),
    "Nigeria": ("Abuja", "heldout"),
    "Ghana": ("Accra", "heldout"),
    "Morocco": ("Rabat", "heldout"),
    "Colombia": ("Bogota", "heldout"),
    "Chile": ("Santiago", "heldout"),
    "Indonesia": ("Jakarta", "heldout"),
    "Philippines": ("Manila", "heldout"),
    "Ethiopia": ("Addis Ababa", "heldout"),
    "Mongolia": ("Ulaanbaatar", "heldout"),
    "Vietnam": ("Hanoi", "heldout"),
}

# name -> (height in metres, split)
_MOUNTAINS: dict[str, tuple[int, str]] = {
    # train
    "Everest": (8849, "train"),
    "Kangchenjunga": (8586, "train"),
    "Makalu": (8485, "train"),
    "Dhaulagiri": (8167, "train"),
    "Nanga Parbat": (8126, "train"),
    "Aconcagua": (6961, "train"),
    "Chimborazo": (6263, "train"),
    "Kilimanjaro": (5895, "train"),
    "Pico de Orizaba": (5636, "train"),
    "Mont Blanc": (4806, "train"),
    "Mount Whitney": (4421, "train"),
    "Mount Fuji": (3776, "train"),
    "Mount Olympus": (2917, "train"),
    "Ben Nevis": (1345, "train"),
    # held-out
    "K2": (8611, "heldout"),
    "Lhotse": (8516, "heldout"),
    "Cho Oyu": (8188, "heldout"),
    "Annapurna": (8091, "heldout"),
    "Denali": (6190, "heldout"),
    "Mount Logan": (5959, "heldout"),
    "Elbrus": (5642, "heldout"),
    "Matterhorn": (4478, "heldout"),
    "Mount Rainier": (4392, "heldout"),
    "Zugspitze": (2962, "heldout"),
    "Mount Kosciuszko": (2228, "heldout"),
}

HEIGHT_UNIT = "m"
"""The unit of every `height` in the knowledge base."""

KNOWLEDGE_BASE: MappingProxyType[str, MappingProxyType[str, str]] = MappingProxyType(
    {
        **{
            name: MappingProxyType({"kind": "country", "capital": capital})
            for name, (capital, _) in _COUNTRIES.items()
        },
        **{
            name: MappingProxyType({"kind": "mountain", "height": str(height)})
            for name, (height, _) in _MOUNTAINS.items()
        },
    }
)
"""entity name -> {attribute: value}; `kind` says what the entity is."""

COUNTRIES: dict[str, tuple[str, ...]] = {
    split: tuple(name for name, (_, s) in _COUNTRIES.items() if s == split) for split in ("train", "heldout")
}
"""Country names per split."""

MOUNTAINS: dict[str, tuple[str, ...]] = {
    split: tuple(name for name, (_, s) in _MOUNTAINS.items() if s == split) for split in ("train", "heldout")
}
"""Mountain names per split."""


def capital_of(country: str) -> str:
    return _COUNTRIES[country][0]


def height_of(mountain: str) -> int:
    return _MOUNTAINS[mountain][0]
