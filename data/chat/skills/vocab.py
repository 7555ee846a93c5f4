"""Words and names the generated prompts draw from: everyday words of varied length and spelling (some famously
hard: 'mississippi', 'accommodate'), people's names and countable objects."""

WORDS = """
apple banana cherry orange grape lemon melon peach pear plum berry strawberry blueberry raspberry mango papaya
coconut tomato potato carrot onion garlic pepper celery cabbage lettuce spinach broccoli pumpkin cucumber radish
bread butter cheese cookie muffin pancake waffle noodle pasta pizza salad soup sugar honey coffee tomorrow
water juice milk tea chocolate vanilla cinnamon biscuit sandwich breakfast dinner lunch kitchen table chair
window door floor ceiling garden flower tree forest river mountain valley ocean island desert meadow village
city street bridge tunnel castle palace tower school library museum theater hospital office market station
airport harbor planet galaxy rocket comet moon sun star cloud rain snow thunder lightning rainbow weather
summer winter spring autumn morning evening midnight holiday birthday calendar journey adventure mystery
balloon blanket bottle bucket button candle carpet basket mirror pillow pencil paper letter envelope notebook
computer keyboard monitor printer battery camera telephone radio television guitar piano violin trumpet drum
whistle hammer ladder shovel scissors needle thread pocket jacket sweater shirt trousers umbrella slipper
giraffe elephant kangaroo penguin dolphin octopus squirrel rabbit tiger lion zebra monkey turtle parrot eagle
sparrow butterfly mosquito beetle spider kitten puppy horse donkey sheep goat chicken turkey falcon hippopotamus
crocodile gorilla cheetah hedgehog raccoon lobster jellyfish mississippi committee accommodate embarrass
necessary occasion recommend separate beginning believe receive tomorrow address possess successful parallel
happiness kindness freedom friendship courage wisdom balance harmony patience silence question answer number
problem pattern picture message surprise promise science history language mathematics geography chemistry
physics biology engineer teacher doctor farmer baker painter sailor pilot dentist lawyer writer reader
student captain soldier artist musician dancer singer player runner swimmer climber gardener carpenter
banner barrel beacon bubble cabbage cactus canyon cannon carriage cassette cellar cereal channel chimney
cinnamon circle collar copper corner cotton cradle crystal curtain dinosaur diamond dragon engine festival
fiddle galloping goggles grammar harvest hazelnut igloo jigsaw kettle lantern marble meadow mitten nugget
orchard paddle pebble pepper puzzle quarrel ribbon riddle saddle scarecrow shadow skillet sorrow spaghetti
spinner squash tassel teapot thimble toffee tunnel unicorn velvet waffle walrus whisker wizard yellow zipper
accessory balloon bookkeeper coffee committee mississippi occurrence programmer tennessee assessment
""".split()
WORDS = list(dict.fromkeys(WORDS))  # keep order, drop repeats so sampling is uniform

NAMES = """Alice Bob Carol David Emma Frank Grace Henry Isla Jack Kate Liam Maya Noah Olivia Peter Quinn Rosa
Sam Tara Umar Vera Will Xena Yusuf Zoe Aisha Ben Chloe Diego Elena Felix Gina Hugo Ivy Jonas Leila Marco Nina
Omar Priya Ravi Sofia Tom Uma Victor Wendy Yara Zack""".split()

OBJECTS = """apples pencils marbles stickers books cookies coins cards shells stamps balloons cupcakes crayons
oranges buttons toys flowers candles eggs boxes""".split()
