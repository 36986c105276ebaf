"""The simulated marketplace's catalog categories and subject attributes, shared by the two simulators.

Pure data (no Django import), so that ``recommender.simulation``, which the
benchmarks use without settings, can read it too.
"""

CATEGORIES = (
    # key, name, sensitive (UU PDP Art. 4(2): health and financial data are specific personal data)
    ("fashion", "Fashion", False),
    ("electronics", "Electronics", False),
    ("home-living", "Home & Living", False),
    ("beauty", "Beauty", False),
    ("groceries", "Groceries", False),
    ("sports", "Sports & Outdoors", False),
    ("toys", "Toys & Baby", False),
    ("automotive", "Automotive", False),
    ("books", "Books & Stationery", False),
    ("health", "Health & Pharmacy", True),
    ("financial-products", "Financial Products", True),
)

# The subject attributes the marketplace reports with an assignment request (and the values the
# demo's marketplace uses): the known values of experiments.targeting.
AGE_BANDS = ("18-24", "25-34", "35-44", "45-54", "55+")
PROVINCES = ("DKI Jakarta", "Jawa Barat", "Jawa Timur", "Jawa Tengah", "Banten", "Sumatera Utara", "Bali")
PLATFORMS = ("android", "ios", "web")
