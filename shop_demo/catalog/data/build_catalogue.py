#!/usr/bin/env python3
"""Build the imgrec demo product catalogue from Open Clip Art Library images.

The images come from Debian's ``openclipart-png`` package (Open Clip Art
Library 0.18, public domain).  Per-image author/title metadata is read from a
sibling ``.txt`` file when one exists; the Debian package ships none, so the
script also reads the RDF metadata (dc:title, dc:creator, cc:license) embedded
in the matching SVG from Debian's ``openclipart-svg`` package.  Only images
whose SVG metadata declares a public-domain licence are used (a few files in
the collection are GPL or carry no licence at all; those are skipped).

Get the sources (Debian/Ubuntu)::

    mkdir -p /tmp/oc && cd /tmp/oc
    apt-get download openclipart-png openclipart-svg
    dpkg -x openclipart-png_*.deb x && dpkg -x openclipart-svg_*.deb x

then::

    python3 build_catalogue.py \\
        --source /tmp/oc/x/usr/share/openclipart/png \\
        --svg-source /tmp/oc/x/usr/share/openclipart/svg \\
        --out shop_demo/catalog/data

(``--svg-source`` defaults to the ``svg`` folder next to ``--source``.)

Output (in --out):
  images/<category>/<product-slug>.png   cropped, <=320 px, PNG with alpha
  catalogue.json, categories.json, LICENSE-IMAGES.md

The product list below is hand-curated (the clip-art folders mix products
with scenes, symbols and diagrams).  Everything else (prices, stock, flags,
descriptions) is generated from a fixed seed, so reruns give identical output.
Needs Pillow.
"""
import argparse
import hashlib
import html
import io
import json
import os
import random
import re
import shutil
import sys
from decimal import Decimal

try:
    from PIL import Image
except ImportError:  # pragma: no cover
    sys.exit("Pillow is required: pip install Pillow")

SEED = 20240607
MAX_SIDE = 320          # longest side of the output images
MIN_SOURCE_SIDE = 64    # skip source images smaller than this on either side
MIN_CONTENT_SIDE = 64   # skip if the visible content's longest side is smaller
MIN_COVERAGE = 0.05     # skip if <5% of the cropped box is visible ink
MAX_SOURCE_PIXELS = 40_000_000  # a handful of 10k x 16k posters; not used
ALPHA_THRESHOLD = 16    # alpha <= this counts as transparent when cropping
PAD_FRACTION = 0.03     # transparent margin added around the cropped content
QUANT_MAX_ERROR = 2.0   # mean abs. RGBA error allowed for palette output

# --------------------------------------------------------------------------
# Categories: slug, name, description, price range, description templates.
# --------------------------------------------------------------------------
CATEGORIES = [
    {
        "slug": "clothing-accessories",
        "name": "Clothing & Accessories",
        "description": "Shirts, shoes, hats, sunglasses and jewellery for every season.",
        "price": (9, 79),
        "lead": [
            "The {name} {is} an easy everyday favourite.",
            "Add the {name} to your wardrobe this season.",
            "Our {name} pair{s} comfort with a timeless look.",
            "The {name} {is} made to be worn again and again.",
            "Step out in style with the {name}.",
        ],
        "tail": [
            "Durable materials and careful stitching.",
            "Available in one versatile size.",
            "A great gift idea for any occasion.",
            "Easy care: follow the label for best results.",
            "Designed to match both casual and smart outfits.",
        ],
    },
    {
        "slug": "fruit",
        "name": "Fresh Fruit",
        "description": "Ripe, hand-picked fruit delivered fresh from the orchard.",
        "price": (0.5, 4.5),
        "lead": [
            "Our {name} {is} picked at peak ripeness.",
            "Sweet, juicy and full of flavour: the {name}.",
            "The {name} {is} sourced from local growers.",
            "Enjoy the {name} as a healthy snack or in desserts.",
            "Crisp and fresh, the {name} {is} a customer favourite.",
        ],
        "tail": [
            "Sold individually.",
            "Store in a cool, dry place.",
            "Perfect for lunch boxes and smoothies.",
            "Rich in vitamins and naturally sweet.",
            "Wash before eating.",
        ],
    },
    {
        "slug": "vegetables",
        "name": "Vegetables",
        "description": "Seasonal vegetables for soups, salads and hearty dinners.",
        "price": (0.4, 3.5),
        "lead": [
            "Fresh {name}, harvested this week.",
            "The {name} bring{s} colour and crunch to any dish.",
            "Our {name} come{s} straight from the farm.",
            "Cook, roast or eat raw: the {name} {does} it all.",
        ],
        "tail": [
            "Keep refrigerated for longer freshness.",
            "Great in stews, stir-fries and salads.",
            "Grown without unnecessary packaging.",
            "Sold per piece.",
        ],
    },
    {
        "slug": "bakery",
        "name": "Bakery & Cakes",
        "description": "Breads, pastries, pies and celebration cakes baked every morning.",
        "price": (1.2, 6),
        "lead": [
            "Our {name} {is} baked fresh every morning.",
            "The {name} {is} made with real butter and free-range eggs.",
            "Treat yourself to the {name}.",
            "A bakery classic: the {name}.",
            "The {name} come{s} straight from our ovens.",
        ],
        "tail": [
            "Best enjoyed on the day of purchase.",
            "Contains gluten, eggs and milk.",
            "Perfect with a cup of coffee or tea.",
            "Order ahead for parties and events.",
        ],
    },
    {
        "slug": "ice-cream-sweets",
        "name": "Ice Cream & Sweets",
        "description": "Ice creams, lollies and sweets for a little everyday treat.",
        "price": (0.3, 5.5),
        "lead": [
            "Cool down with the {name}.",
            "The {name} {is} a sweet treat for all ages.",
            "Our {name} {is} made with real cream and natural flavours.",
            "Kids and grown-ups love the {name}.",
        ],
        "tail": [
            "Keep frozen until serving.",
            "A perfect summer refresher.",
            "Contains milk; may contain nuts.",
            "Great for parties and picnics.",
        ],
    },
    {
        "slug": "ready-meals",
        "name": "Deli & Ready Meals",
        "description": "Burgers, pizza, sandwiches and hot dishes ready when you are.",
        "price": (2.5, 12),
        "lead": [
            "The {name} {is} freshly prepared in our kitchen.",
            "Hungry? The {name} {is} ready in minutes.",
            "A hearty classic: the {name}.",
            "Our {name} {is} made with quality ingredients.",
        ],
        "tail": [
            "Heat and serve.",
            "Ideal for a quick lunch or dinner.",
            "Check the label for allergen information.",
            "Serves one.",
        ],
    },
    {
        "slug": "beverages",
        "name": "Beverages",
        "description": "Juices, soft drinks, coffee, tea, milk, beer and wine.",
        "price": (0.9, 4.5),
        "lead": [
            "Refresh yourself with the {name}.",
            "The {name} {is} best served chilled.",
            "Our {name} {is} a customer favourite.",
            "Pour a glass of the {name} and relax.",
        ],
        "tail": [
            "Perfect with any meal.",
            "Store in a cool place.",
            "Great for parties and get-togethers.",
            "A classic that never goes out of style.",
        ],
    },
    {
        "slug": "kitchenware",
        "name": "Kitchen & Tableware",
        "description": "Pots, pans, mugs, teapots and handy kitchen helpers.",
        "price": (4.5, 39),
        "lead": [
            "The {name} make{s} everyday cooking easier.",
            "Upgrade your kitchen with the {name}.",
            "Our {name} combine{s} practical design with good looks.",
            "The {name} {is} built for daily use.",
        ],
        "tail": [
            "Easy to clean.",
            "Makes a lovely housewarming gift.",
            "Sturdy construction for years of use.",
            "Dishwasher-safe where applicable.",
        ],
    },
    {
        "slug": "home-living",
        "name": "Home & Living",
        "description": "Furniture, lamps and household helpers for a cosy home.",
        "price": (9, 59),
        "lead": [
            "The {name} bring{s} comfort to any room.",
            "Make your home cosier with the {name}.",
            "Our {name} {is} designed for everyday living.",
            "The {name} {is} practical, sturdy and stylish.",
        ],
        "tail": [
            "Simple assembly where required.",
            "Fits both modern and classic interiors.",
            "Built to last.",
            "Free delivery on larger orders.",
        ],
    },
    {
        "slug": "tools",
        "name": "Tools & Garden",
        "description": "Hand tools, power tools, locks and garden equipment.",
        "price": (4.5, 39),
        "lead": [
            "The {name} {is} a must-have for every toolbox.",
            "Get the job done with the {name}.",
            "Our {name} {is} built for DIY and professional use.",
            "The {name} offer{s} reliable performance.",
        ],
        "tail": [
            "Ergonomic design for comfortable handling.",
            "Made from hard-wearing materials.",
            "Ideal for the workshop, garage or garden.",
            "Backed by our one-year guarantee.",
        ],
    },
    {
        "slug": "office-supplies",
        "name": "Office Supplies",
        "description": "Pens, staplers, calculators and everything for the desk.",
        "price": (0.8, 12),
        "lead": [
            "Keep your desk organised with the {name}.",
            "The {name} {is} an office essential.",
            "Our {name} {is} reliable and easy to use.",
            "Work smarter with the {name}.",
        ],
        "tail": [
            "Suitable for home, school and office.",
            "Bulk discounts available.",
            "A practical addition to any workspace.",
            "Built for everyday use.",
        ],
    },
    {
        "slug": "computer-hardware",
        "name": "Computer Hardware",
        "description": "Computers, monitors, printers, keyboards and accessories.",
        "price": (9, 59),
        "lead": [
            "The {name} deliver{s} dependable everyday performance.",
            "Upgrade your setup with the {name}.",
            "Our {name} {is} easy to set up and use.",
            "The {name} {is} ideal for home and office.",
        ],
        "tail": [
            "Plug and play on most systems.",
            "Includes a two-year warranty.",
            "Compact design saves desk space.",
            "Cables and quick-start guide included.",
        ],
    },
    {
        "slug": "electronics",
        "name": "Phones & Electronics",
        "description": "Phones, cameras, audio gear, TVs and batteries.",
        "price": (9, 79),
        "lead": [
            "Stay connected with the {name}.",
            "The {name} pack{s} great features into a neat design.",
            "Our {name} {is} simple to use right out of the box.",
            "The {name} {is} a smart choice for home or travel.",
        ],
        "tail": [
            "Includes a two-year warranty.",
            "Energy-efficient and reliable.",
            "A great gift for gadget lovers.",
            "Batteries not included unless stated.",
        ],
    },
    {
        "slug": "musical-instruments",
        "name": "Musical Instruments",
        "description": "Guitars, drums, brass, strings and accessories for musicians.",
        "price": (49, 499),
        "lead": [
            "The {name} offer{s} rich, warm tone.",
            "Make music with the {name}.",
            "Our {name} {is} suitable for beginners and pros alike.",
            "The {name} {is} crafted for great sound and playability.",
        ],
        "tail": [
            "Set up and checked by our technicians.",
            "Ideal for practice, lessons and the stage.",
            "Carry case sold separately.",
            "A great gift for aspiring musicians.",
        ],
    },
    {
        "slug": "sports",
        "name": "Sports & Outdoors",
        "description": "Balls, bats, rackets, skates and outdoor gear.",
        "price": (8, 49),
        "lead": [
            "Up your game with the {name}.",
            "The {name} {is} built for training and match play.",
            "Our {name} {is} tough enough for regular use.",
            "Get active with the {name}.",
        ],
        "tail": [
            "Suitable for clubs, schools and home use.",
            "Made from durable, weather-resistant materials.",
            "Great for all skill levels.",
            "A top pick for sports fans.",
        ],
    },
    {
        "slug": "toys",
        "name": "Toys & Games",
        "description": "Teddy bears, puzzles, blocks, figures and classic toys.",
        "price": (3, 39),
        "lead": [
            "The {name} guarantee{s} hours of fun.",
            "Kids love the {name}.",
            "Our {name} {is} a classic toy for curious minds.",
            "Play, learn and imagine with the {name}.",
        ],
        "tail": [
            "Suitable for ages 3 and up.",
            "Made from child-safe materials.",
            "Makes a wonderful birthday present.",
            "Not suitable for children under 36 months.",
        ],
    },
    {
        "slug": "vehicles",
        "name": "Model Vehicles",
        "description": "Scale model cars, trucks, planes, boats and bikes for collectors.",
        "price": (12, 89),
        "lead": [
            "This {name} {is} a detailed scale replica.",
            "Collectors will love the {name}.",
            "The {name} {is} a die-cast model with authentic details.",
            "Add the {name} to your model collection.",
        ],
        "tail": [
            "Display stand included.",
            "Suitable for collectors aged 8 and up.",
            "Finished by hand with care.",
            "Comes in a gift box.",
        ],
    },
    {
        "slug": "bird-prints",
        "name": "Bird Art Prints",
        "description": "Colourful bird illustrations printed on heavyweight art paper.",
        "price": (8, 35),
        "lead": [
            "This {name} print brightens up any wall.",
            "Bring nature indoors with the {name} print.",
            "The {name} illustration is printed on archival paper.",
            "A charming {name} art print.",
        ],
        "tail": [
            "Available unframed in A4.",
            "Printed with fade-resistant inks.",
            "Ships rolled in a protective tube.",
            "A lovely gift for bird lovers.",
        ],
    },
    {
        "slug": "wildlife-prints",
        "name": "Wildlife Art Prints",
        "description": "Animal illustrations from around the world, printed on art paper.",
        "price": (8, 35),
        "lead": [
            "This {name} print adds character to any room.",
            "The {name} illustration is printed on archival paper.",
            "A striking {name} art print.",
            "Celebrate wildlife with the {name} print.",
        ],
        "tail": [
            "Available unframed in A4.",
            "Printed with fade-resistant inks.",
            "Ships rolled in a protective tube.",
            "Perfect for nurseries, offices and living rooms.",
        ],
    },
    {
        "slug": "flowers-plants",
        "name": "Flowers & Plants",
        "description": "Fresh-cut flowers, bouquets and potted plants.",
        "price": (3.5, 39),
        "lead": [
            "The {name} bring{s} a splash of colour to your home.",
            "Brighten someone's day with the {name}.",
            "Our {name} {is} grown by local nurseries.",
            "The {name} {is} a simple way to freshen up any room.",
        ],
        "tail": [
            "Water regularly and keep out of direct sun.",
            "Delivered fresh in protective packaging.",
            "A thoughtful gift for any occasion.",
            "Care instructions included.",
        ],
    },
]

# --------------------------------------------------------------------------
# Curated products: category | source path (relative to --source) | name
# [| price range "lo-hi" when the category default does not fit]
# --------------------------------------------------------------------------
PRODUCTS = """
clothing-accessories|people/clothing/camicia_in_seta_architet_01.png|Teal Silk Shirt
clothing-accessories|people/clothing/t-shirt_01.png|Black Crew-Neck T-Shirt
clothing-accessories|people/clothing/t-shirt_02.png|Navy Logo T-Shirt
clothing-accessories|people/clothing/wild_summer_shorts_natha_01.png|Wild Print Board Shorts
clothing-accessories|people/clothing/tie_-_clothing_nicu_bucu_01.png|Green Bow Tie
clothing-accessories|people/clothing/mitten_nathan_eady_01.png|Zigzag Knit Mitten
clothing-accessories|people/clothing/winter_hat_nathan_eady_01.png|Pom-Pom Winter Hat
clothing-accessories|people/clothing/hiking_boot_jarno_vasama_.png|Leather Hiking Boot|89-179
clothing-accessories|people/clothing/tennis_shoe_jarno_vasama_.png|Canvas Tennis Shoe|39-79
clothing-accessories|people/clothing/tennis_shoes_jarno_vasam_.png|Court Sneakers|49-119
clothing-accessories|people/clothing/thongs_01.png|Beach Flip-Flops
clothing-accessories|people/clothing/sunglasses_01.png|Classic Black Sunglasses
clothing-accessories|people/clothing/sunglasses_linda_kim_01.png|Wire-Frame Sunglasses
clothing-accessories|people/clothing/gold_chain_of_round_lin_01.png|Gold Round-Link Chain|129-399
clothing-accessories|people/clothing/gold_chain_curved_as_a__01.png|Gold Curb Necklace|149-449
clothing-accessories|people/clothing/jewelry/wedding_rings_jarno_vas_.png|Gold Wedding Ring Set|299-899
clothing-accessories|people/clothing/straw_tote_linda_kim_01.png|Straw Beach Tote
clothing-accessories|containers/borsa_estiva_architetto__01.png|Orange Summer Shopper Bag
clothing-accessories|people/clothing/adventurer_hat_nicu_bucu_01.png|Adventurer Fedora
clothing-accessories|people/clothing/hats/aussie_hat_01.png|Aussie Bush Hat
clothing-accessories|people/clothing/hats/baseball_cap_ganson.png|Green Baseball Cap
clothing-accessories|people/clothing/hats/blue_fedora.png|Blue Fedora
clothing-accessories|people/clothing/hats/red_fedora.png|Red Fedora
clothing-accessories|people/clothing/hats/hat_-_clothing_nicu_bucu_01.png|Tan Cowboy Hat
clothing-accessories|people/clothing/hats/hat_-_clothing_nicu_bucu_02.png|Royal Blue Cap
clothing-accessories|people/clothing/hats/hat_-_clothing_nicu_bucu_03.png|Purple Ribbon Top Hat
clothing-accessories|people/clothing/hats/hat_-_clothing_nicu_bucu_04.png|Red Tasselled Fez
clothing-accessories|people/clothing/hats/hat_-_clothing_nicu_bucu_05.png|Black Silk Top Hat
clothing-accessories|people/clothing/hats/propeller.png|Propeller Beanie
clothing-accessories|people/clothing/hats/purple_hat_nicu_buculei_01.png|Purple Wide-Brim Hat
clothing-accessories|people/clothing/hats/slouch_hat_01.png|Camo Slouch Hat
clothing-accessories|people/clothing/hats/sombrero_dave_pena_01.png|Mexican Sombrero
clothing-accessories|people/clothing/hats/tophat_benji_park_01.png|Classic Top Hat
clothing-accessories|people/clothing/hats/simple_crown_with_three_01.png|Gold Costume Crown
fruit|food/fruit/an_apple_01.png|Red Apple
fruit|food/fruit/another_apple_01.png|Gala Apple
fruit|food/fruit/apple_martin_schmidt-li_01r.png|Pink Lady Apple
fruit|food/fruit/cartoon_apple_k_yager_01.png|Red Delicious Apple
fruit|food/fruit/banana.png|Banana
fruit|food/fruit/bananas_nicu_buculei_01.png|Banana Bunch
fruit|food/fruit/cherries.png|Sweet Cherries
fruit|food/fruit/cherry_jean_victor_balin_.png|Morello Cherry
fruit|food/fruit/cherry_jonathan_dietrich_01.png|Bing Cherry
fruit|food/fruit/grape_01.png|Red Grapes
fruit|food/fruit/grapes_01.png|Concord Grapes
fruit|food/fruit/grapes_simple.png|Muscat Grapes
fruit|food/fruit/green_pear_01.png|Green Pear
fruit|food/fruit/pear.png|Williams Pear
fruit|food/fruit/pear_01.png|Bosc Pear
fruit|food/fruit/pera_architetto_francesc_01.png|Conference Pear
fruit|food/fruit/la_prugna_architetto_fra_01.png|Purple Plums
fruit|food/fruit/prune.png|Black Plum
fruit|food/fruit/lemon.png|Lemon
fruit|food/fruit/lemon_half_ganson.png|Halved Lemon
fruit|food/fruit/lime_whole_ganson.png|Lime
fruit|food/fruit/lime_half_ganson.png|Halved Lime
fruit|food/fruit/orange.png|Navel Orange
fruit|food/fruit/orange_dave_pena_01.png|Valencia Orange
fruit|food/fruit/orange_slice_jonathan_di_01.png|Orange Slices
fruit|food/fruit/peach_simple.png|Peach
fruit|food/fruit/pesca_architetto_frances_01.png|Yellow Peach
fruit|food/fruit/melon_goneri_le_bouder_01.png|Cantaloupe Melon
fruit|food/fruit/pineapple.png|Pineapple|2.5-4.5
fruit|food/fruit/strawberry.png|Strawberry
fruit|food/fruit/strawberry_01.png|Garden Strawberry
fruit|food/fruit/strawberry_jonathan_diet_01.png|Wild Strawberry
fruit|food/fruit/watermelon_james_kilfige_01.png|Whole Watermelon|3.5-6.5
fruit|food/fruit/watermelon_simple.png|Watermelon Slice
fruit|food/fruit/pasteque_01.png|Watermelon Wedge
vegetables|food/vegetables/aglio_architetto_frances_01.png|Garlic Bulbs
vegetables|food/vegetables/cayenne_pepper_1_simple_01.png|Cayenne Pepper
vegetables|food/vegetables/cayennepepperrevisited_d_01.png|Long Red Chili
vegetables|food/vegetables/habanero_pepper_1_simpl_01.png|Habanero Pepper
vegetables|food/vegetables/peperoncino_pepper_fra_.png|Red Chili Peppers
vegetables|food/vegetables/corn_cob.png|Sweet Corn Cob
vegetables|food/vegetables/pannocchia_di_gran_turc_01.png|Corn in the Husk
vegetables|food/vegetables/onion_joerg_rosenbauer_01.png|Brown Onion
vegetables|food/vegetables/ravanello_architetto_fra_01.png|Radish Bunch
vegetables|food/vegetables/what_s_up_doc_01.png|Carrot
vegetables|food/champignon_01.png|Button Mushroom
vegetables|food/pomodori_architetto_fran_01.png|Vine Tomatoes
vegetables|food/zucca_architetto_frances_01.png|Orange Pumpkin
vegetables|food/pumpkin2_yemu_01.png|Carving Pumpkin
vegetables|food/breads_and_carbs/potato_nicu_buculei_.png|Russet Potato
bakery|food/breads_and_carbs/bread.png|White Sandwich Loaf
bakery|food/breads_and_carbs/bread_01.png|Rustic Bloomer Loaf
bakery|food/breads_and_carbs/croissant_01.png|Butter Croissant
bakery|food/breads_and_carbs/croissant_gerald_g._01.png|Almond Croissant
bakery|food/breads_and_carbs/garlic_toast.png|Garlic Toast
bakery|food/breads_and_carbs/pretzel_01.png|Soft Pretzel
bakery|food/breads_and_carbs/muffin1.png|Classic Muffin
bakery|food/breads_and_carbs/muffin2.png|Double Chocolate Muffin
bakery|food/breads_and_carbs/muffin_3.png|Blueberry Muffin
bakery|food/desserts/muffin_jean_victor_balin_.png|Cherry-Topped Cupcake
bakery|food/breads_and_carbs/pancake.png|Pancake with Syrup
bakery|food/breads_and_carbs/pancakes_berries.png|Berry Pancake Stack
bakery|food/breads_and_carbs/pancakes_ganson.png|Buttermilk Pancakes
bakery|food/desserts/gauffre_au_chocolat_01.png|Chocolate Waffle
bakery|food/desserts/birthday_cake.png|Chocolate Birthday Cake|19-39
bakery|food/desserts/torta_architetto_frances_01.png|Candle Layer Cake|19-39
bakery|food/desserts/cake1_jarno_vasamaa_01.png|Three-Tier Wedding Cake|129-349
bakery|food/desserts/cake_etienne_bersac_r.png|Raspberry Candle Cake|19-39
bakery|food/desserts/flat_cake_jean-victor_ba_01.png|Celebration Party Cake|24-49
bakery|food/desserts/gateau_jean_victor_balin_.png|Strawberry Layer Gateau|18-36
bakery|food/desserts/pink_cake_gabrielle_now_r.png|Pink Strawberry Cake|18-36
bakery|food/desserts/pie_apple.png|Apple Pie Slice
bakery|food/desserts/pie_cherry.png|Cherry Pie Slice
bakery|food/desserts/pie_pumpkin.png|Pumpkin Pie Slice
bakery|food/desserts/flan_jean-victor_balin_01.png|Custard Tart Slice
bakery|food/desserts/pudim_valessio_soares_de_.png|Caramel Pudding|4-12
ice-cream-sweets|food/desserts/cone1_ganson.png|Single Scoop Cone
ice-cream-sweets|food/desserts/cone2_ganson.png|Double Scoop Cone
ice-cream-sweets|food/desserts/cone3_ganson.png|Triple Scoop Cone
ice-cream-sweets|food/desserts/cone4_ganson.png|Quadruple Scoop Cone
ice-cream-sweets|food/desserts/cone_alt1.png|Vanilla Cake Cone
ice-cream-sweets|food/desserts/cone_alt_2.png|Strawberry Cake Cone
ice-cream-sweets|food/desserts/cone_alt3.png|Neapolitan Triple Cone
ice-cream-sweets|food/desserts/cone_alt4.png|Mint Chip Tower Cone
ice-cream-sweets|food/desserts/cone_soft_chocolate.png|Chocolate Soft Serve
ice-cream-sweets|food/desserts/cone_soft_vanilla.png|Vanilla Soft Serve
ice-cream-sweets|food/desserts/glace_italienne_jean-vic_01.png|Blueberry Soft Serve
ice-cream-sweets|food/desserts/gelato_all_39_italiana_a_01.png|Pistachio Gelato Cones
ice-cream-sweets|food/desserts/ice_cream_cone_linda_kim_01.png|Pastel Triple Cone
ice-cream-sweets|food/desserts/glace_01_jean-victor_bal_01.png|Chocolate Chip Ice Bar
ice-cream-sweets|food/desserts/glace_2_jean-victor_bali_01.png|Chocolate-Coated Ice Bar
ice-cream-sweets|food/desserts/glace_03_jean-victor_bal_01.png|Peach Ice Lolly
ice-cream-sweets|food/desserts/glace_4_jean-victor_bali_01.png|Chocolate Dipped Ice Cream Bar
ice-cream-sweets|food/desserts/glace_05_jean-victor_bal_01.png|Blueberry Ice Pop
ice-cream-sweets|food/desserts/glace_06_jean-victor_bal_01.png|Rocket Ice Lolly
ice-cream-sweets|food/desserts/glace_7_jean-victor_bali_01.png|Striped Fruit Ice Lolly
ice-cream-sweets|food/desserts/candy_01.png|Blue Wrapped Candy
ice-cream-sweets|food/desserts/candy_02.png|Striped Taffy Candy
ice-cream-sweets|food/desserts/candy_10.png|Candy Cane
ice-cream-sweets|food/desserts/candy_20.png|Cherry Candy Pop
ice-cream-sweets|food/desserts/candy_21.png|Orange Candy Pop
ice-cream-sweets|food/desserts/candy_22.png|Green Apple Candy Pop
ice-cream-sweets|food/desserts/candy_30.png|Strawberry Swirl Lollipop
ice-cream-sweets|food/desserts/candy_31.png|Caramel Swirl Lollipop
ice-cream-sweets|food/desserts/lollipop_dave_pena_01.png|Giant Red Lollipop
ready-meals|food/meats_and_eggs/hamburger_ganson.png|Classic Hamburger
ready-meals|food/meats_and_eggs/burger_http_www.treebui_r.png|Deluxe Beef Burger
ready-meals|food/meats_and_eggs/chicken_burger.png|Crispy Chicken Burger
ready-meals|food/meats_and_eggs/hot_dog.png|Hot Dog with Relish
ready-meals|food/meats_and_eggs/hot_dog_juliane_krug_r.png|Loaded Hot Dog
ready-meals|food/meats_and_eggs/corn_dog.png|Corn Dog
ready-meals|food/meats_and_eggs/egg_muffin.png|Egg Breakfast Muffin
ready-meals|food/meats_and_eggs/farmer_onelette.png|Farmhouse Omelette Sub
ready-meals|food/meats_and_eggs/bacon_ganson.png|Smoked Bacon Strips
ready-meals|food/meats_and_eggs/breakfast_sausage.png|Breakfast Sausages
ready-meals|food/meats_and_eggs/fried_egg.png|Sunny-Side-Up Egg
ready-meals|food/meats_and_eggs/half_egg_jean-victor_bal_01.png|Boiled Egg Half
ready-meals|food/meats_and_eggs/mcoon_01.png|Soft-Boiled Egg in Cup
ready-meals|food/breads_and_carbs/hash_browns.png|Hash Browns
ready-meals|food/breads_and_carbs/potato_chips.png|Sea Salt Potato Chips
ready-meals|food/french_fries_juliane_kr_r.png|French Fries
ready-meals|food/fries_ganson.png|Steak-Cut Fries
ready-meals|food/onion_rings.png|Onion Rings
ready-meals|food/burrito_ganson.png|Chicken Burrito
ready-meals|food/perogies_ganson.png|Potato Perogies
ready-meals|food/lasagna_ganson.png|Beef Lasagna
ready-meals|food/spaghetti_ganson.png|Spaghetti Bolognese
ready-meals|food/pizza_4_stagioni_archite_01.png|Four Seasons Pizza Slice
ready-meals|food/pizza_cheese.png|Cheese Pizza Slice
ready-meals|food/pizza_pepperoni.png|Pepperoni Pizza Slice
ready-meals|food/pizza_rectangular__geral_01.png|Sicilian Square Pizza|9-18
ready-meals|food/pizza_slice_fco._andrade_01.png|Margherita Pizza Slice
ready-meals|food/sandwich_one_jean-victor_01.png|Ham & Cheese Sandwich
ready-meals|food/submarine_sandwich_01.png|Italian Sub Sandwich
ready-meals|food/bowl_of_steaming_soup_01.png|Hearty Beef Broth
ready-meals|food/soup_jarno_vasamaa_.png|Chicken Noodle Soup
ready-meals|food/turkey_platter_01_with_fruit_and_vegitables_01.png|Roast Turkey Platter|29-59
beverages|food/beverages/apple_juice_box.png|Apple Juice Box
beverages|food/beverages/orange_juice_box.png|Orange Juice Box
beverages|food/beverages/bottled_drink.png|Citrus Soda Bottle
beverages|food/beverages/pop_can.png|Cola Can
beverages|food/beverages/soft_drink.png|Fountain Soda Cup
beverages|food/beverages/lemonade.png|Fresh Lemonade
beverages|food/beverages/lemonade_linda_kim_01.png|Homemade Lemonade
beverages|food/beverages/drinking_glass_with_red_punch_01.png|Fruit Punch
beverages|food/beverages/ice_water_ganson.png|Sparkling Mineral Water
beverages|food/beverages/milk_carton_jarno_vasama_.png|Whole Milk Carton
beverages|food/beverages/milk_ganson.png|Semi-Skimmed Milk
beverages|food/beverages/coffee.png|Cappuccino Cup
beverages|food/beverages/coffee_ganson.png|Filter Coffee Mug
beverages|food/beverages/tazza_di_caffe_architett_01.png|Espresso Cup
beverages|food/beverages/cuppa_schwoo_01.png|Hot Chocolate Mug
beverages|food/beverages/teacup_ganson.png|English Breakfast Tea
beverages|food/beverages/lattine_di_birra_archite_01.png|Lager Six-Pack|5.5-9.5
beverages|food/beverages/alcohol/beer.png|Draught Beer Mug
beverages|food/beverages/alcohol/beer1.png|Pint of Pale Ale
beverages|food/beverages/alcohol/bottiglia_di_vino_pregi_01.png|Reserve Red Wine|14-39
beverages|food/beverages/alcohol/ontologia_del_vino_archi_01.png|Aged Red Wine|12-29
beverages|food/beverages/alcohol/wine_glass_christian_h._.png|Rose Wine by the Glass|5-9
beverages|food/beverages/alcohol/cocktail_daniel_steele_r.png|Tropical Cocktail|7-12
kitchenware|food/beverages/a_teapot_01.png|Yellow Electric Kettle|24-59
kitchenware|food/beverages/teapot_ganson.png|Porcelain Teapot
kitchenware|food/beverages/teiera_tazza_architetto__01.png|Purple Teapot & Cup Set|19-49
kitchenware|food/beverages/macchina_caffe_architett_01.png|Drip Coffee Maker|39-129
kitchenware|food/beverages/mug.png|Olive Enamel Mug
kitchenware|food/beverages/zielony_kubek_herbaty_-_01.png|Green Ceramic Mug
kitchenware|food/beverages/kubek_herbaty_-_mug_of__01.png|Glass Tea Mug
kitchenware|office/cup_rollandin_francesco_.png|Yellow Breakfast Cup
kitchenware|tools/meatgrinder_benji_park_.png|Hand-Crank Meat Grinder|29-69
kitchenware|tools/pan_frouke_01.png|Non-Stick Frying Pan
kitchenware|food/meats_and_eggs/frying_pan_padella_in_i_03.png|Blue Enamel Skillet
kitchenware|tools/scolapasta_e_pentola_arc_01.png|Pasta Pot with Colander|29-69
kitchenware|tools/forchettoni_da_grigliat_01.png|BBQ Grill Tool Set
kitchenware|food/bowl_chaspo_.png|Ceramic Serving Bowl
kitchenware|food/fondue_uliphant_01.png|Cheese Fondue Set|29-79
kitchenware|food/food_leif_lodahl_01.png|Wooden Utensil Crock
kitchenware|food/large_plate.png|Blue Rim Dinner Plate
kitchenware|food/small_plate.png|Blue Rim Side Plate
kitchenware|food/mix_cucina_frullatore_ar_01.png|Stand Mixer|149-449
kitchenware|food/toque_01.png|Chef's Toque
kitchenware|food/beverages/alcohol/wine_corks_ganson.png|Natural Wine Corks
home-living|buildings/furniture/soft_blue_couch_jonadab_01.png|Soft Blue Sofa|399-999
home-living|buildings/furniture/poltrona_ufficio_archite_01.png|Blue Office Chair|89-249
home-living|buildings/furniture/sedia_in_legno_architett_01.png|Folding Wooden Chair|39-89
home-living|buildings/furniture/sedia_e_ombrelloni_archi_01.png|Patio Set with Parasol|149-399
home-living|buildings/furniture/small_square_table_01.png|Small Square Table|59-149
home-living|buildings/furniture/wooden_table_benji_park_01.png|Wooden Dining Table|199-599
home-living|buildings/furniture/tavolo_in_legno_architet_01.png|Farmhouse Trestle Table|249-699
home-living|buildings/furniture/mobile_architetto_france_01.png|Bedside Cabinet|79-199
home-living|buildings/furniture/wooden_barrel_petri_lumm_01.png|Decorative Oak Barrel|69-149
home-living|office/desk_lamp_gerald_g._01.png|Red Desk Lamp
home-living|office/liberty_architetto_franc_01.png|Tiffany-Style Table Lamp|79-199
home-living|tools/hurricane_lamp_ganson.png|Red Hurricane Lantern
home-living|office/picture_frame_jakob_chao_.png|Silver Picture Frame
home-living|containers/cesto_architetto_frances_01.png|Yellow Shopping Basket
home-living|containers/valigie_bags_architetto__01.png|Travel Suitcase Set|89-249
home-living|containers/cardboard_box_jarno_vasa_.png|Moving Box
home-living|tools/umbrella.png|Rainbow Umbrella
home-living|tools/blue_vacuum_cleaner_jaim_01.png|Canister Vacuum Cleaner|99-299
home-living|tools/vacuum_cleaner_mariusz_k_01.png|Compact Vacuum Cleaner|79-199
home-living|tools/vavuum_cleaner_-_uprigh_01.png|Upright Vacuum Cleaner|129-349
home-living|tools/ferro_da_stiro_architett_01.png|Steam Iron|24-69
home-living|tools/ironing_board_gerald_g._01.png|Ironing Board|29-69
home-living|tools/broom_nicu_buculei_01.png|Straw Broom
tools|tools/hammer_nicu_buculei_01.png|Club Hammer
tools|tools/hammer_peterm1.png|Engineer's Hammer
tools|tools/construction_hammer_jon__01.png|Framing Hammer
tools|tools/blacksmith_hammer_ganson.png|Ball-Peen Hammer
tools|tools/wooden_mallot_benji_park_.png|Wooden Mallet
tools|tools/blacksmith_anvil_ganson.png|Blacksmith Anvil|149-399
tools|tools/axe_peterm_.png|Wood Splitting Axe
tools|tools/saw_peterm_.png|Hand Saw
tools|tools/utensile_sega_architetto_01.png|Panel Saw
tools|tools/drill_peterm_.png|Electric Power Drill|49-129
tools|tools/screwdriver_peterm_.png|Flathead Screwdriver
tools|tools/utensili_chiave_e_cacci_01.png|Spanner & Screwdriver Set
tools|tools/tools_nicu_buculei_01.png|Mini Tool Kit
tools|tools/tool.png|Combination Pliers
tools|tools/nail_puller_peterm_.png|Carpenter's Pincers
tools|tools/wrench_jarno_vasamaa_01.png|Socket Wrench
tools|tools/viti_architetto_francesc_01.png|Wood Screws
tools|tools/livella_architetto_franc_01.png|Spirit Level|12-39
tools|tools/calamita_architetto_fran_01.png|Horseshoe Magnet
tools|tools/paint_brush_costea_bogda_01.png|Paint Brush
tools|tools/paint_roller_gerald_g._01.png|Paint Roller
tools|tools/brush_roller_costea_bogd_01.png|Mini Paint Roller
tools|tools/scrub_brush_michael_moor_.png|Scrub Brush
tools|tools/secchio_e_spugna_archite_01.png|Bucket and Sponge Set
tools|tools/padlock_aj_ashton_01.png|Brass Padlock
tools|tools/lock_-_open_afief_halumi_01.png|Open Shackle Padlock
tools|tools/lock.png|Yellow Security Padlock
tools|tools/simple_shovel_jeff_simps_01.png|Garden Spade
tools|tools/roundpointshovel_benji_p_01.png|Round Point Shovel
tools|tools/trowel_benji_park_01.png|Garden Trowel
tools|tools/cultivator_benji_park_01.png|Hand Cultivator
tools|tools/leafrake_benji_park_01.png|Leaf Rake
tools|tools/hedgeshear_benji_park_01.png|Hedge Shears|19-45
tools|tools/bypasslopper_benji_park_01.png|Bypass Lopper|24-49
office-supplies|office/ballpoint_pen_jonathan_d_01.png|Ballpoint Pen
office-supplies|office/pen_uliphant_01.png|Gel Pen
office-supplies|office/pen_01.png|Quill Pen
office-supplies|office/pencil_benji_park_01.png|HB Pencil with Eraser
office-supplies|office/pencil_jonathan_dietrich_01.png|Yellow Pencil
office-supplies|office/crayon.png|Wax Crayon
office-supplies|office/eraser.png|Pink Eraser
office-supplies|office/pinzatrice_rollandin_arc_01.png|Red Stapler
office-supplies|office/stappler.png|Heavy-Duty Stapler|14-39
office-supplies|office/scotch_rollandin_france_01.png|Tape Dispenser
office-supplies|office/scissors.png|Office Scissors
office-supplies|office/clips_architetto_frances_01.png|Jumbo Paper Clip
office-supplies|office/paperclip.png|Paper Clip
office-supplies|office/pin_-_blue_nicu_buculei_01.png|Blue Push Pin
office-supplies|office/puntine_architetto_franc_01.png|Coloured Push Pin Set
office-supplies|office/clipboard_01.png|Brown Clipboard
office-supplies|office/appunti_architetto_franc_01.png|Clipboard with Notes
office-supplies|office/folder_01.png|Manila File Folders
office-supplies|office/folder_juliane_krug_01.png|Open Ring Binder
office-supplies|office/box_with_folders_nicu_bu_01.png|Archive Box with Folders|9-24
office-supplies|office/blue_stamper_orbu_.png|Self-Inking Stamp
office-supplies|office/stamp_01.png|Rubber Stamp
office-supplies|office/calculator.png|Desktop Calculator|9-29
office-supplies|office/simple_calculator_01.png|Pocket Calculator|5-15
office-supplies|office/calcolatrice_architetto__01.png|Printing Calculator|39-89
office-supplies|office/cassa_negozio_architetto_01.png|Electronic Cash Register|149-399
office-supplies|office/cassa_d_39_epoca_archite_01.png|Vintage Cash Register|249-599
office-supplies|office/cestino_vuoto_architetto_01.png|Mesh Waste Basket|6-19
office-supplies|office/clessidra_architetto_fra_01.png|Hourglass Sand Timer
office-supplies|office/magnifying_glass_teudimu_01.png|Magnifying Glass
office-supplies|office/megaphone_nicu_buculei_01.png|Megaphone|29-79
computer-hardware|computer/hardware/computer-aj_aj_ashton_01.png|Desktop PC Bundle|599-1299
computer-hardware|computer/hardware/computer.png|All-in-One Computer|699-1499
computer-hardware|computer/hardware/computer1.png|Beige Desktop Computer|399-899
computer-hardware|computer/hardware/computer2.png|Tower PC with Monitor|499-999
computer-hardware|computer/hardware/workstation_01.png|Workstation PC|999-2299
computer-hardware|computer/hardware/desktop.png|Slim Desktop Case|49-119
computer-hardware|computer/hardware/tower.png|Mid-Tower Case|59-149
computer-hardware|computer/hardware/racked.png|Rack Server Stack|1999-4999
computer-hardware|computer/hardware/laptop.png|Black Laptop|499-1299
computer-hardware|computer/hardware/flat_screen_gino_rivera_01.png|Widescreen Monitor|129-349
computer-hardware|computer/hardware/lcd_monitor_shandy_brown_.png|19-inch LCD Monitor|99-199
computer-hardware|computer/hardware/lcd_monitor_the_structor_.png|Glossy LCD Monitor|149-349
computer-hardware|computer/hardware/monitor.png|Silver Flat Panel Monitor|129-299
computer-hardware|computer/hardware/doublesight_dual_monito_01.png|Dual Monitor Stand|49-149
computer-hardware|computer/hardware/video1_sergio_luiz_arauj_01.png|CRT Monitor|49-119
computer-hardware|computer/hardware/computer_keyboard_01.png|Full-Size Keyboard
computer-hardware|computer/hardware/mouse.png|Wired Optical Mouse
computer-hardware|computer/hardware/mouse2.png|Classic White Mouse
computer-hardware|computer/hardware/mouse_scroll_fco._andrad_01.png|Scroll Wheel Mouse
computer-hardware|computer/hardware/joystick_atari_style_da_r.png|Retro Joystick
computer-hardware|computer/hardware/joystick_beige_gray_petr_01.png|Beige Arcade Joystick
computer-hardware|computer/hardware/joystick_black_red_petri_01.png|Red Arcade Joystick
computer-hardware|computer/hardware/etiquette_printer_01.png|Inkjet Printer|59-149
computer-hardware|computer/hardware/printer.png|Office Printer|119-299
computer-hardware|computer/hardware/printer_nicu_buculei_01.png|Photo Printer|89-199
computer-hardware|computer/hardware/stampante_architetto_fra_01.png|Compact Printer|59-129
computer-hardware|computer/hardware/laserprinter.png|Laser Printer|149-399
computer-hardware|computer/hardware/etiquette_scanner_01.png|Flatbed Scanner|69-179
computer-hardware|computer/hardware/gnome-dev-harddisk.png|Internal Hard Drive|49-129
computer-hardware|computer/hardware/unita_disco_rigido_archi_01.png|External Hard Drive|69-159
computer-hardware|computer/hardware/usb_memory_stick_01.png|USB Flash Drive
computer-hardware|computer/hardware/modem.png|Dial-Up Modem|19-49
computer-hardware|computer/hardware/8port_hub_ruairi_hann_r.png|5-Port Network Switch|19-49
electronics|office/telephone/mobile.png|Candybar Mobile Phone|59-149
electronics|office/telephone/mobile_phone_01.png|Silver Mobile Phone|79-199
electronics|office/telephone/handphone_toh_yen_cheng_01.png|Blue Mobile Phone|59-129
electronics|office/telephone/slim_cell_phone_israel_c_01.png|Slim Cell Phone|99-249
electronics|office/telephone/sprint_cell_phone_joel_r.png|White Flip Phone|69-149
electronics|office/telephone/ip_phone_michael_hart_r.png|Office IP Phone|89-229
electronics|office/telephone/phone.png|Desk Telephone
electronics|office/telephone/phone_sergio_luiz_araujo_01.png|Cordless Home Phone
electronics|office/telephone/red_telephone_mimooh_01.png|Red Retro Telephone
electronics|office/telephone/telefono_email_frolland_01.png|Vintage Rotary Telephone
electronics|electronics/sony_clie_william_page_.png|Pocket PDA|99-249
electronics|computer/hardware/handheld_gps_gerald_g._01.png|Handheld GPS|99-299
electronics|electronics/macchina_fotografica_di_01.png|Digital Compact Camera|149-399
electronics|computer/hardware/digital-camera_aj_ashton_01.png|Silver Digital Camera|129-349
electronics|computer/hardware/digital_camera_nicu_bucu_01.png|Pocket Digital Camera|79-199
electronics|electronics/camcorder_jaime_sanchez1.png|Compact Camcorder|199-499
electronics|electronics/telecamera_architetto_fr_01.png|Vintage Video Camera|149-399
electronics|electronics/video_cassette_vhs_mo_.png|VHS Video Cassette|2-6
electronics|electronics/cd.png|Blank CD-R|0.9-2.5
electronics|computer/hardware/rhythmbox.png|Portable Music Player|49-149
electronics|recreation/music/headphones_davide_pesent_.png|Over-Ear Headphones|39-199
electronics|electronics/casco_con_microfono_arch_01.png|Headset with Microphone
electronics|recreation/music/boombox_linda_kim_01.png|Retro Boombox
electronics|recreation/music/gramophone.png|Gramophone Record Player|149-399
electronics|recreation/music/fifties_jukebox_gerald_g_01.png|Fifties Jukebox|1499-3999
electronics|recreation/televisore_telecomando_a_01.png|CRT Television with Remote|79-199
electronics|recreation/tv_01.png|Flat-Screen TV|299-899
electronics|electronics/satellite_dish_ali_hussn_01.png|Satellite Dish
electronics|electronics/battery/battery_01.png|Alkaline D Battery|1.5-4.5
electronics|electronics/battery/battery_jean-victor_bali_01.png|AAA Battery|0.9-2.5
electronics|electronics/bulb/bulb.png|Bright Light Bulb|1.5-6
electronics|electronics/bulb/lightbulb_brightlit_benj_.png|Warm White Bulb|1.5-6
electronics|computer/connectors/usb.png|USB-A Cable|4.9-12.9
musical-instruments|recreation/music/guitar_ganson.png|Acoustic Guitar
musical-instruments|recreation/music/guitar_jarno_vasamaa1.png|Dreadnought Acoustic Guitar
musical-instruments|recreation/music/guitar_profile_philippe__01.png|Classical Guitar
musical-instruments|recreation/music/electric_guitar_andrea__01r.png|Electric Guitar
musical-instruments|recreation/music/guitar_jarno_vasamaa2.png|Solid-Body Electric Guitar
musical-instruments|recreation/music/bass_guitar_a.j._ashton_.png|Electric Bass Guitar
musical-instruments|recreation/music/violin_colour_ganson.png|Student Violin
musical-instruments|recreation/music/violin_mo_01.png|Antique Violin Pair|899-2499
musical-instruments|recreation/music/cello_ganson.png|Cello|599-1999
musical-instruments|recreation/music/harp1_ganson.png|Celtic Lap Harp|299-699
musical-instruments|recreation/music/harp2_ganson.png|Concert Pedal Harp|2999-8999
musical-instruments|recreation/music/harp3_ganson.png|Celtic Harp|399-999
musical-instruments|recreation/music/mountain_dulcimer_terry_.png|Mountain Dulcimer
musical-instruments|recreation/music/piano_geraint_luff_01.png|Upright Piano|2499-6999
musical-instruments|recreation/music/xylophone_ganson.png|Rainbow Xylophone|19-49
musical-instruments|recreation/music/drums_jarno_vasamaa_.png|Five-Piece Drum Kit|399-1199
musical-instruments|recreation/music/djambf_ganson.png|Djembe Drum
musical-instruments|recreation/music/africandrum_benji_park1.png|Tall Talking Drum
musical-instruments|recreation/music/africandrum_benji_park2.png|Carved Hand Drum
musical-instruments|recreation/music/africandrum_benji_park_.png|Conga Drum
musical-instruments|recreation/music/derbouk_jurgen_01.png|Darbuka
musical-instruments|recreation/music/maracas_ganson.png|Maracas Pair|12-29
musical-instruments|recreation/music/flute_ganson.png|Concert Flute|299-899
musical-instruments|recreation/music/oboe_ganson.png|Oboe|899-2499
musical-instruments|recreation/music/saxophone_jarno_vasamaa_.png|Alto Saxophone|499-1499
musical-instruments|recreation/music/trumpet_b_flat_colour_ganso.png|B-flat Trumpet
musical-instruments|recreation/music/trumpet_pocket_colour_ganso.png|Pocket Trumpet
musical-instruments|recreation/music/trumpet_harmon_mute__ganson.png|Trumpet Harmon Mute|24-59
musical-instruments|recreation/music/tenor_trombone_ganson.png|Tenor Trombone
musical-instruments|recreation/music/french_horn_ganson.png|French Horn|899-2499
musical-instruments|recreation/music/microphone_stand_gerald__01.png|Microphone Stand|19-49
sports|recreation/sports/soccer_ball_ganson.png|Classic Soccer Ball
sports|recreation/sports/soccer_ballon_tanguy_jac_.png|Match Soccer Ball
sports|recreation/sports/volley-ball_andrea_bianc_01.png|Indoor Volleyball
sports|recreation/sports/volley_ball_angelo_gelmi_01.png|Beach Volleyball
sports|recreation/sports/handball_ball_brice_boye_01.png|Handball
sports|recreation/sports/rugby_brice_boyer_01.png|Rugby Ball
sports|recreation/sports/football_helmet_gerald_g_01.png|Football Helmet|59-199
sports|recreation/sports/basebalm_ganson.png|Official Baseball
sports|recreation/sports/baseball_anthony_liekens_01.png|Practice Baseball
sports|recreation/sports/baseball_bat_ganson.png|Baseball Bat
sports|recreation/sports/baseball_glove_ganson.png|Baseball Glove|29-89
sports|recreation/sports/cricket_bat_01.png|Cricket Bat
sports|recreation/sports/tennis_racket_01.png|Tennis Racket
sports|recreation/sports/table_tennis_omar_abo-na_01.png|Table Tennis Set
sports|recreation/sports/blowling_ball_01.png|Bowling Ball
sports|recreation/sports/8_ball_jarno_vasamaa.png|Black 8 Ball
sports|recreation/sports/9_ball_jarno_vasamaa.png|Yellow 9 Ball
sports|recreation/sports/8ball_form_jarno_vasama.png|Pool Ball Rack Set|49-129
sports|recreation/sports/dartboard_ruud_steltenpo_01.png|Dartboard|24-69
sports|recreation/sports/target_with_arrow_virgin_01.png|Archery Target|29-89
sports|recreation/sports/cronometro_mauro_olivo_01.png|Sports Stopwatch
sports|recreation/sports/binoculars_vladimir_hern_01.png|Sports Binoculars|39-149
sports|recreation/sports/backpacker_ganson.png|Hiking Backpack|59-179
sports|people/clothing/pattino_architetto_franc_01.png|Figure Ice Skate|59-169
sports|recreation/rollerblades.png|Inline Skates|59-149
sports|recreation/toys/surfboard_davek_01.png|Surfboard|199-549
sports|recreation/nitrox_scuba_tank_01.png|Nitrox Scuba Tank
sports|recreation/sledge_01.png|Wooden Sled|39-99
toys|recreation/toys/simple_teddy_bear_gerald_01.png|Brown Teddy Bear
toys|recreation/toys/simple_teddy_bear_with__01.png|Teddy Bear with Bow Tie
toys|recreation/toys/stylized_teddy_bear_gera_01.png|Honey Teddy Bear
toys|recreation/toys/stylized_teddy_bear_wit_01.png|Teddy Bear with Heart
toys|recreation/toys/stylized_teddy_bear_wit_02.png|Valentine Teddy Bear
toys|recreation/toys/teddybear_jarno_vasamaa_.png|Classic Jointed Teddy
toys|recreation/toys/rubber_duck1_ganson.png|Rubber Duck
toys|recreation/toys/rubber_duck2_ganson.png|Quacking Rubber Duck
toys|recreation/toys/abc_blocks_petri_lummema_01.png|ABC Wooden Blocks
toys|tools/toys/unit_blocks_lion_kimbro_01.png|Wooden Unit Blocks
toys|recreation/toys/rubik.png|Puzzle Cube 3x3
toys|recreation/toys/rubik_s_cube_petri_lumme_01.png|Speed Cube
toys|recreation/toys/rubik_s_cube_random_petr_01.png|Scrambled Puzzle Cube
toys|recreation/dice.png|Giant Foam Dice
toys|recreation/toys/ball.png|Star Bouncy Ball
toys|recreation/toys/beach_ball_01.png|Beach Ball
toys|recreation/toys/boomerang_01.png|Wooden Boomerang
toys|recreation/toys/toy_paper_plane_01.png|Paper Airplane Kit
toys|recreation/toys/kiddy_train_orlando_kara_.png|Toddler Toy Train
toys|recreation/toys/wagon_01.png|Red Toy Wagon|49-99
toys|recreation/toys/robot_ganson.png|Wind-Up Toy Robot|12-29
toys|recreation/toys/gameboy_pocket_durex_r.png|Retro Handheld Game Console|49-99
toys|animals/dinosaurs/dino_architetto_francesc_03.png|Diplodocus Toy Figure
toys|animals/dinosaurs/dino_architetto_francesc_06.png|Stegosaurus Toy Figure
toys|animals/dinosaurs/dino_architetto_francesc_10.png|Pteranodon Toy Figure
toys|animals/dinosaurs/dinosauri_architetto_fra_02.png|Triceratops Toy Figure
toys|animals/dinosaurs/dinosauro_architetto_fra_03.png|Plesiosaur Toy Figure
vehicles|transportation/vehicles/car.png|Red Compact Car
vehicles|transportation/vehicles/skoda_car_alejandro_teja_.png|Red Hatchback
vehicles|transportation/vehicles/road_runner_ganson.png|Muscle Car
vehicles|transportation/vehicles/old_car_lumen_design_st_r.png|Vintage 1950s Sedan
vehicles|transportation/vehicles/_chevrolet_celebirt_.png|Classic 1980s Sedan
vehicles|transportation/vehicles/1989_chevrolet_celebrit_01.png|Classic 1980s Station Wagon
vehicles|transportation/vehicles/4wd.png|Green 4x4 Off-Roader
vehicles|transportation/vehicles/blazer_01.png|Olive Utility SUV
vehicles|transportation/vehicles/hummer_03.png|Military Utility Vehicle
vehicles|transportation/vehicles/hummer_07.png|Utility Pickup Truck
vehicles|transportation/vehicles/small_truck_steffen_gluc_01.png|Delivery Van
vehicles|transportation/vehicles/big_truck_01.png|Semi Truck with Trailer
vehicles|transportation/vehicles/old_truck_indana_model__01.png|Antique Flatbed Truck
vehicles|transportation/vehicles/trattore_architetto_fran_01.png|Red Farm Tractor
vehicles|transportation/vehicles/bus1_jarno_vasamaa_01.png|Red Coach Bus
vehicles|transportation/vehicles/bus2_jarno_vasamaa_01.png|Blue City Bus
vehicles|transportation/vehicles/aircraft_jarno_vasamaa_.png|Passenger Jet Airliner
vehicles|transportation/vehicles/aircraft_jarno_vasamaa1.png|Twin-Prop Commuter Plane
vehicles|transportation/vehicles/aircraft_jarno_vasamaa2.png|Blue Jet Airliner
vehicles|transportation/vehicles/aircraft_jarno_vasamaa3.png|Single-Engine Light Aircraft
vehicles|transportation/vehicles/aircraft_jarno_vasamaa4.png|Private Business Jet
vehicles|transportation/boating/boat_jarno_vasamaa1.png|Schooner Sailing Ship
vehicles|transportation/boating/boat_jarno_vasamaa_.png|Sloop Sailboat
vehicles|transportation/boating/sailboat_illustration.png|Sailing Dinghy
vehicles|transportation/vehicles/trawler_01.png|Red Speedboat
vehicles|transportation/vehicles/bicycle_01.png|Touring Bicycle
vehicles|transportation/vehicles/vtt_02.png|Mountain Bike
bird-prints|animals/birds/acquila_architetto_franc_02.png|Bald Eagle Portrait
bird-prints|animals/birds/acquila_architetto_franc_03.png|Soaring Bald Eagle
bird-prints|animals/birds/aquila_frontale_architet_01.png|Eagle in Flight
bird-prints|animals/birds/simbolo_egizio_architett_01.png|Egyptian Falcon
bird-prints|animals/birds/gufo_civetta_architetto__01.png|Little Owl
bird-prints|animals/birds/owl_on_branch_ganson.png|Owl on Branch
bird-prints|animals/birds/bird_of_peace_mauro_oliv_01.png|Yellow Songbird
bird-prints|animals/birds/uccello_bianco_e_nero_ar_01.png|Woodpecker
bird-prints|animals/birds/uccello_profilo_01_archi_01.png|Blackbird Silhouette
bird-prints|animals/birds/uccello_profilo_02_archi_01.png|Swallow Silhouette
bird-prints|animals/birds/crow_01.png|Crow Silhouette
bird-prints|animals/birds/cigno_di_spalle_architet_01.png|White Swan
bird-prints|animals/birds/flamand_jean-victor_bali_01.png|Pink Flamingo
bird-prints|animals/birds/emperor_penguin_ralf_ste_01.png|Emperor Penguin
bird-prints|animals/birds/gabbiano_architetto_fran_01.png|Seagull on the Shore
bird-prints|animals/birds/gull_marcelo_staudt_01.png|Herring Gull
bird-prints|animals/birds/duck_yellow_kurt_cagle_.png|Farmyard Duck
bird-prints|animals/birds/jonathon_s_duck_01.png|Grey Duck
bird-prints|animals/birds/gallo_di_profilo_archite_01.png|Red Rooster
bird-prints|animals/birds/rooster_01.png|Cartoon Rooster
bird-prints|animals/birds/hen_01.png|Black Hen
bird-prints|animals/birds/tacchino_architetto_fran_01.png|Wild Turkey
bird-prints|animals/birds/pollo_architetto_frances_01.png|Strutting Turkey
wildlife-prints|animals/mammals/big_cats/leone_01_architetto_fran_01.png|Lion
wildlife-prints|animals/mammals/big_cats/tiger_graig_ryan_smith_-_01.png|Bengal Tiger Portrait
wildlife-prints|animals/mammals/big_cats/tigre01_architetto_franc_01.png|Prowling Tiger
wildlife-prints|animals/mammals/elefante01_architetto_fr_01.png|African Elephant
wildlife-prints|animals/mammals/elefante02_architetto_fr_01.png|Asian Elephant
wildlife-prints|animals/mammals/rhinoceros_architetto_fr_01.png|Armoured Rhinoceros
wildlife-prints|animals/mammals/antilope_architetto_fran_01.png|Spotted Antelope
wildlife-prints|animals/mammals/camel_head_01.png|Camel Portrait
wildlife-prints|animals/mammals/canguro_architetto_franc_01.png|Red Kangaroo
wildlife-prints|animals/mammals/echidna_01.png|Echidna
wildlife-prints|animals/armadillo_architetto_fra_01.png|Armadillo
wildlife-prints|animals/bison_leif_lodahl_01.png|American Bison
wildlife-prints|animals/mammals/dall_sheep_ram_ganson.png|Dall Sheep Ram
wildlife-prints|animals/mammals/bears/orso_architetto_francesc_01.png|Brown Bear Portrait
wildlife-prints|animals/mammals/bears/orso_architetto_francesc_02.png|Roaring Grizzly
wildlife-prints|animals/mammals/simple_stylized_wolf_he_01.png|Grey Wolf Portrait
wildlife-prints|animals/mammals/stylized_wolf_head_geral_01.png|Timber Wolf Portrait
wildlife-prints|animals/mammals/raccoon_ganson.png|Curious Raccoon
wildlife-prints|animals/mammals/coniglio_architetto_fran_01.png|White Rabbit
wildlife-prints|animals/mammals/cartoon_cat_gerald_g._01.png|Prowling Grey Cat
wildlife-prints|animals/mammals/horses/cavallo_architetto_franc_01.png|Galloping Horse
wildlife-prints|animals/mammals/horses/cavallo_architetto_franc_03.png|Horse Head Portrait
wildlife-prints|animals/mammals/vacca_pezzata_rossa_val_01.png|Red Pied Cow
wildlife-prints|animals/mammals/dolphin.png|Bottlenose Dolphin
wildlife-prints|animals/mammals/dolphin_enrique_meza_c_01.png|Blue Dolphin
wildlife-prints|animals/mammals/orca_matthew_gates_r.png|Orca
wildlife-prints|animals/mammals/seal.png|Grey Seal
wildlife-prints|animals/seal_sek_.png|Walrus
wildlife-prints|animals/turtle_jurgen_gaeremyn_01.png|Tortoise
wildlife-prints|animals/rana01_architetto_france_01.png|Green Tree Frog
wildlife-prints|animals/red-eye_frog_mirko_maisc_01.png|Red-Eyed Tree Frog
wildlife-prints|animals/fish/altum_angelfish_01.png|Altum Angelfish
wildlife-prints|animals/fish/clown_loach_01.png|Clown Loach
wildlife-prints|animals/fish/yellow_gourami_01.png|Yellow Gourami
wildlife-prints|animals/fish/seahorse.png|Seahorse
flowers-plants|plants/flowers/bouquet_of_flowers_01.png|Spring Bouquet in Vase|24-49
flowers-plants|plants/flowers/mazzo_di_fiori_architett_01.png|Mixed Flower Bouquet|19-45
flowers-plants|plants/flowers/tulips_ganson.png|Pink Tulips
flowers-plants|plants/flowers/pink-rose_tess_brady_01.png|Pink Rose
flowers-plants|plants/flowers/sun_flower_ganson.png|Sunflower
flowers-plants|plants/flowers/daffodil_jonathan_dietri_01.png|Daffodil Stem
flowers-plants|plants/flowers/daffodil_susan_park_01.png|Yellow Daffodil
flowers-plants|plants/flowers/daisy_jonathan_dietrich_01.png|Ox-Eye Daisy
flowers-plants|plants/flowers/flowers_jonathan_dietric_01.png|Black-Eyed Susan Bunch
flowers-plants|plants/flowers/dream_flower_janet_theob_01.png|Blue Thistle Flower
flowers-plants|plants/flowers/flower1_juliane_krug_01.png|Golden Gerbera
flowers-plants|plants/flowers/flower_03.png|White Gerbera
flowers-plants|plants/flowers/funnyflower_02.png|Lavender Daisy
flowers-plants|plants/flowers/flower_01.png|Blue Periwinkle
flowers-plants|plants/flowers/flower_02.png|Red Periwinkle
flowers-plants|plants/flowers/flower_peterm_01.png|Orange Blossom Stem
flowers-plants|plants/flowers/red_flower_01.png|Red Garden Flower
flowers-plants|plants/flowers/red_flower_raphael_seban_01.png|Orange Poppy
flowers-plants|plants/flowers/lotas_yogesh_kanitkar_01.png|Lotus Flower
flowers-plants|plants/flowers/magnolia_white_patricia__01.png|White Magnolia
flowers-plants|plants/flowers/sakura_01.png|Cherry Blossom
flowers-plants|plants/flowers/sakura_dave_pena_01.png|Sakura Bloom
flowers-plants|plants/flowers/flowerandpot_daniel_ste_r.png|Potted Pink Gerbera
flowers-plants|plants/flowers/geranium_ganson.png|Potted Red Geranium
flowers-plants|plants/cacuts_01.png|Prickly Cactus
flowers-plants|plants/flowers/cartoon_tree_01.png|Miniature Topiary Tree
flowers-plants|plants/tree_branches_and_roots_01.png|Young Oak Sapling|12-29
flowers-plants|plants/olivier_one_jean-victor__01.png|Olive Branch
flowers-plants|plants/shamrock_for_march_natha_01.png|Lucky Clover Plant
"""

EMAIL_RE = re.compile(r"\s*[(<\[]?\s*(?:e-?mail\s*:\s*)?[\w.+-]+@[\w-]+(?:\.[\w-]+)+\s*[)>\]]?", re.I)


GENERIC_TITLE_RE = re.compile(
    r"^(?:Clipart by .*|R\d+ (?:sibmission|submission|General)|Etiquette Icons|"
    r"Diner Menu collection|HASH\(0x[0-9a-f]+\))$", re.I)


def clean_text(value):
    """Unescape (possibly double-escaped) entities, drop e-mail addresses."""
    if not value:
        return ""
    for _ in range(3):
        new = html.unescape(value)
        if new == value:
            break
        value = new
    value = EMAIL_RE.sub("", value)
    value = re.sub(r"\s+-\s*$", "", value)
    value = re.sub(r"\s+", " ", value).strip(" -,;")
    return value


def slugify(text):
    text = text.lower().replace("&", " and ").replace("'", "")
    return re.sub(r"[^a-z0-9]+", "-", text).strip("-")


# --------------------------------------------------------------------------
# Metadata
# --------------------------------------------------------------------------
def read_txt_metadata(path):
    """Parse a sibling .txt ('Key: value' lines) if the collection has one."""
    meta = {}
    if not os.path.exists(path):
        return meta
    with open(path, encoding="utf-8", errors="replace") as fh:
        for line in fh:
            if ":" not in line:
                continue
            key, _, val = line.partition(":")
            key = key.strip().lower()
            val = val.strip()
            if not val:
                continue
            if key in ("title", "name") and "title" not in meta:
                meta["title"] = val
            elif key in ("author", "creator", "artist") and "author" not in meta:
                meta["author"] = val
            elif key in ("license", "licence", "rights") and "license" not in meta:
                meta["license"] = val
    return meta


def _rdf_field(text, tag):
    m = re.search(r"<dc:%s>(.*?)</dc:%s>" % (tag, tag), text, re.S)
    if not m:
        return ""
    inner = m.group(1)
    agent = re.search(r"<dc:title>(.*?)</dc:title>", inner, re.S)
    if tag != "title" and agent:
        inner = agent.group(1)
    if "<" in inner:
        return ""
    return re.sub(r"\s+", " ", inner).strip()


def read_svg_metadata(path):
    meta = {}
    if not path or not os.path.exists(path):
        return meta
    with open(path, encoding="utf-8", errors="replace") as fh:
        text = fh.read()
    meta["title"] = _rdf_field(text, "title")
    meta["author"] = _rdf_field(text, "creator")
    m = re.search(r'<cc:license\s+rdf:resource="([^"]*)"', text)
    meta["license"] = m.group(1) if m else ""
    return meta


def is_public_domain(license_value):
    lic = (license_value or "").lower()
    return "publicdomain" in lic or "public domain" in lic or "/zero/" in lic or "cc0" in lic


def metadata_for(rel, source, svg_source):
    txt = read_txt_metadata(os.path.join(source, rel[:-4] + ".txt"))
    svg = read_svg_metadata(os.path.join(svg_source, rel[:-4] + ".svg")) if svg_source else {}
    title = clean_text(txt.get("title") or svg.get("title", ""))
    if not title or GENERIC_TITLE_RE.match(title):
        # a few exporters wrote a collection name instead of the drawing's
        # title; fall back to the file name
        title = os.path.splitext(os.path.basename(rel))[0].replace("_", " ").strip()
    author = clean_text(txt.get("author") or svg.get("author", ""))
    if re.match(r"^HASH\(0x[0-9a-f]+\)$", author):  # exporter bug in a few files
        author = ""
    return {
        "title": title,
        "author": author,
        "license": txt.get("license") or svg.get("license", ""),
        "has_metadata": bool(txt or svg),
    }


# --------------------------------------------------------------------------
# Images
# --------------------------------------------------------------------------
def load_rgba(path):
    im = Image.open(path)
    if im.width * im.height > MAX_SOURCE_PIXELS:
        raise ValueError("huge source image %dx%d" % im.size)
    im.load()
    has_alpha = im.mode in ("RGBA", "LA", "PA") or "transparency" in im.info
    return im.convert("RGBA"), has_alpha


def prepare_image(path):
    """Return (processed RGBA image, source pixel digest) or raise ValueError."""
    im, has_alpha = load_rgba(path)
    w, h = im.size
    if w < MIN_SOURCE_SIDE or h < MIN_SOURCE_SIDE:
        raise ValueError("source too small (%dx%d)" % (w, h))
    digest = hashlib.sha256(b"%dx%d" % (w, h) + im.tobytes()).hexdigest()
    alpha = im.getchannel("A")
    if not has_alpha:
        # opaque image: treat near-white as background for the checks/crop
        lum = im.convert("L")
        mask = lum.point(lambda v: 255 if v < 245 else 0)
    else:
        mask = alpha.point(lambda v: 255 if v > ALPHA_THRESHOLD else 0)
    bbox = mask.getbbox()
    if not bbox:
        raise ValueError("blank image")
    cw, ch = bbox[2] - bbox[0], bbox[3] - bbox[1]
    if max(cw, ch) < MIN_CONTENT_SIDE:
        raise ValueError("visible content too small (%dx%d)" % (cw, ch))
    ink = mask.crop(bbox).histogram()[255] / float(cw * ch)
    if ink < MIN_COVERAGE:
        raise ValueError("mostly transparent (%.1f%% ink)" % (100 * ink))
    pad = int(round(max(cw, ch) * PAD_FRACTION))
    box = (max(0, bbox[0] - pad), max(0, bbox[1] - pad),
           min(w, bbox[2] + pad), min(h, bbox[3] + pad))
    im = im.crop(box)
    if max(im.size) > MAX_SIDE:
        scale = MAX_SIDE / float(max(im.size))
        size = (max(1, round(im.width * scale)), max(1, round(im.height * scale)))
        # premultiplied resize avoids dark fringes around transparent edges
        lanczos = getattr(Image, "Resampling", Image).LANCZOS
        im = im.convert("RGBa").resize(size, lanczos).convert("RGBA")
    return im, digest


def _mean_abs_error(a, b):
    from PIL import ImageChops, ImageStat
    diff = ImageChops.difference(a, b)
    return sum(ImageStat.Stat(diff).mean) / 4.0


def encode_png(im):
    """Encode as optimised PNG; use a 256-colour palette with alpha when it
    is smaller and visually near-identical, otherwise keep full RGBA."""
    buf = io.BytesIO()
    im.save(buf, "PNG", optimize=True)
    best = buf.getvalue()
    try:
        method = getattr(getattr(Image, "Quantize", Image), "FASTOCTREE", 2)
        dither = getattr(getattr(Image, "Dither", Image), "NONE", 0)
        q = im.quantize(colors=256, method=method, dither=dither)
    except Exception:  # pragma: no cover - very old Pillow
        return best
    if _mean_abs_error(im, q.convert("RGBA")) <= QUANT_MAX_ERROR:
        buf = io.BytesIO()
        q.save(buf, "PNG", optimize=True)
        if len(buf.getvalue()) < len(best):
            best = buf.getvalue()
    return best


# --------------------------------------------------------------------------
# Generated shop data
# --------------------------------------------------------------------------
def nice_price(rng, lo, hi):
    value = lo * (hi / lo) ** rng.random()  # log-uniform: more cheap items
    if value < 10:
        cents = rng.choice([0.29, 0.49, 0.79, 0.90, 0.99])
        value = int(value) + cents
    elif value < 100:
        value = int(value) + rng.choice([0.50, 0.90, 0.95, 0.99])
    else:
        value = int(value / 10) * 10 + rng.choice([4.99, 9.00, 9.99])
    value = min(max(value, lo), hi)
    return str(Decimal(value).quantize(Decimal("0.01")))


def is_plural(name):
    """Rough check whether a product name is grammatically plural."""
    head = re.split(r"\s+(?:with|in|on|of|for|by)\s+", name)[0]
    last = re.split(r"[\s-]+", head)[-1]
    if last.isupper():  # acronyms such as GPS
        return False
    last = last.lower()
    return last.endswith("s") and not last.endswith(("ss", "us", "is", "os"))


def make_description(rng, cat, name):
    plural = is_plural(name)
    words = {"name": name, "is": "are" if plural else "is",
             "s": "" if plural else "s", "does": "do" if plural else "does"}
    lead = rng.choice(cat["lead"]).format(**words)
    tail = rng.choice(cat["tail"])
    lead = lead[0].upper() + lead[1:]
    return lead + " " + tail if rng.random() < 0.85 else lead


def parse_products():
    rows = []
    for line in PRODUCTS.strip().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = [p.strip() for p in line.split("|")]
        cat, rel, name = parts[:3]
        price_range = None
        if len(parts) > 3 and parts[3]:
            lo, hi = parts[3].split("-")
            price_range = (float(lo), float(hi))
        rows.append((cat, rel, name, price_range))
    return rows


def md_escape(text):
    return text.replace("|", "\\|").replace("*", "\\*").replace("_", "\\_")


def build(args):
    source = os.path.abspath(args.source)
    svg_source = args.svg_source
    if svg_source is None:
        guess = os.path.join(os.path.dirname(source.rstrip("/")), "svg")
        svg_source = guess if os.path.isdir(guess) else ""
    if not os.path.isdir(source):
        sys.exit("--source %s is not a directory" % source)
    if not svg_source and not args.no_svg_metadata:
        sys.exit("no SVG metadata folder found next to --source; pass --svg-source DIR "
                 "(extracted openclipart-svg) or --no-svg-metadata to rely on .txt files")
    if svg_source and not os.path.isdir(svg_source):
        sys.exit("--svg-source %s is not a directory" % svg_source)

    out = os.path.abspath(args.out)
    img_root = os.path.join(out, "images")
    if os.path.isdir(img_root):
        shutil.rmtree(img_root)
    os.makedirs(img_root)

    cats = {c["slug"]: c for c in CATEGORIES}
    rows = parse_products()
    names = [r[2] for r in rows]
    dup_names = {n for n in names if names.count(n) > 1}
    if dup_names:
        sys.exit("duplicate product names: %s" % sorted(dup_names))
    unknown = {r[0] for r in rows} - set(cats)
    if unknown:
        sys.exit("unknown categories: %s" % sorted(unknown))

    seen_pixels = {}
    seen_output = {}
    products, skipped = [], []
    for cat_slug, rel, name, price_range in rows:
        path = os.path.join(source, rel)
        if not os.path.exists(path):
            skipped.append((rel, "missing"))
            continue
        meta = metadata_for(rel, source, svg_source)
        if meta["has_metadata"] and meta["license"] and not is_public_domain(meta["license"]):
            skipped.append((rel, "licence is %s" % meta["license"]))
            continue
        if meta["has_metadata"] and not meta["license"] and not args.allow_unknown_license:
            skipped.append((rel, "no licence in metadata"))
            continue
        try:
            im, digest = prepare_image(path)
        except (ValueError, OSError) as exc:
            skipped.append((rel, str(exc)))
            continue
        if digest in seen_pixels:
            skipped.append((rel, "duplicate of %s" % seen_pixels[digest]))
            continue
        seen_pixels[digest] = rel
        out_digest = hashlib.sha256(b"%dx%d" % im.size + im.tobytes()).hexdigest()
        if out_digest in seen_output:
            skipped.append((rel, "duplicate of %s" % seen_output[out_digest]))
            continue
        seen_output[out_digest] = rel

        slug = slugify(name)
        rel_img = "images/%s/%s.png" % (cat_slug, slug)
        os.makedirs(os.path.join(out, "images", cat_slug), exist_ok=True)
        with open(os.path.join(out, rel_img), "wb") as fh:
            fh.write(encode_png(im))

        rng = random.Random("%d:%s" % (SEED, slug))
        cat = cats[cat_slug]
        stock = 0 if rng.random() < 0.10 else int(rng.triangular(1, 150, 12))
        products.append({
            "slug": slug,
            "name": name,
            "category": cat_slug,
            "description": make_description(rng, cat, name),
            "price": nice_price(rng, *(price_range or cat["price"])),
            "stock": stock,
            "published": rng.random() >= 0.05,
            "image": rel_img,
            "source": rel,
            "author": meta["author"] or "Unknown (Open Clip Art Library)",
            "_title": meta["title"],
        })

    slugs = [p["slug"] for p in products]
    assert len(slugs) == len(set(slugs)), "duplicate slugs"

    used = [c for c in CATEGORIES if any(p["category"] == c["slug"] for p in products)]
    categories = [{"slug": c["slug"], "name": c["name"], "description": c["description"]}
                  for c in used]
    with open(os.path.join(out, "categories.json"), "w", encoding="utf-8") as fh:
        json.dump(categories, fh, indent=2, ensure_ascii=False)
        fh.write("\n")
    with open(os.path.join(out, "catalogue.json"), "w", encoding="utf-8") as fh:
        json.dump([{k: v for k, v in p.items() if not k.startswith("_")} for p in products],
                  fh, indent=2, ensure_ascii=False)
        fh.write("\n")
    write_license(out, products, used, checked_licence=bool(svg_source))

    counts = {c["slug"]: sum(p["category"] == c["slug"] for p in products) for c in used}
    print("products: %d in %d categories" % (len(products), len(used)))
    for slug, n in counts.items():
        print("  %-22s %3d" % (slug, n))
    if skipped:
        print("skipped %d:" % len(skipped))
        for rel, why in skipped:
            print("  %s: %s" % (rel, why))
    return products, skipped


def write_license(out, products, categories, checked_licence=True):
    if checked_licence:
        licence_note = [
            "current openclipart.org terms use CC0 1.0). Every image listed below is marked",
            "as public domain in its own metadata. You may copy, modify and distribute the",
        ]
    else:
        licence_note = [
            "current openclipart.org terms use CC0 1.0), as stated in the Debian package's",
            "copyright file. You may copy, modify and distribute the",
        ]
    lines = [
        "# Image licence and attribution",
        "",
        "All product images in `images/` are clip art from the **Open Clip Art Library**",
        "(https://openclipart.org), taken from Debian's `openclipart-png` package",
        "(version 0.18). Author and title metadata comes from the matching SVG files in",
        "Debian's `openclipart-svg` package (the RDF metadata embedded in each drawing).",
        "",
        "The Open Clip Art Library releases its artwork into the **public domain**",
        "(Creative Commons Public Domain Dedication / Public Domain Certification; the",
    ] + licence_note + [
        "images, even commercially, without asking permission. Attribution is not",
        "required, but we list the original authors below as a courtesy.",
        "",
        "The images were cropped to their visible content, scaled down to at most",
        "%d px on the longest side and re-encoded as PNG by `build_catalogue.py`." % MAX_SIDE,
        "Product names, prices and descriptions are fictional demo data.",
        "",
        "\"Original title\" is the title recorded in the drawing's metadata; where the",
        "metadata only names a collection (e.g. \"Etiquette Icons\"), the file name is",
        "shown instead.",
        "",
    ]
    for cat in categories:
        lines.append("## %s (`%s`)" % (cat["name"], cat["slug"]))
        lines.append("")
        lines.append("| File | Original path (`usr/share/openclipart/png/…`) | Original title | Author |")
        lines.append("|---|---|---|---|")
        for p in products:
            if p["category"] != cat["slug"]:
                continue
            lines.append("| `%s` | `%s` | %s | %s |" % (
                p["image"], p["source"], md_escape(p["_title"]), md_escape(p["author"])))
        lines.append("")
    with open(os.path.join(out, "LICENSE-IMAGES.md"), "w", encoding="utf-8") as fh:
        fh.write("\n".join(lines))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--source", required=True,
                    help="extracted openclipart png folder (…/usr/share/openclipart/png)")
    ap.add_argument("--svg-source", default=None,
                    help="extracted openclipart svg folder for author/title/licence "
                         "metadata (default: 'svg' next to --source, if present)")
    ap.add_argument("--out", required=True, help="output data folder")
    ap.add_argument("--no-svg-metadata", action="store_true",
                    help="run without SVG metadata (authors/licences only from .txt files)")
    ap.add_argument("--allow-unknown-license", action="store_true",
                    help="also use images whose metadata names no licence")
    args = ap.parse_args(argv)
    build(args)


if __name__ == "__main__":
    main()
