"""Word lists behind the verifier's features (streams/policy/verifier_features.py): negations, question words,
stopwords, antonyms and the groups of words that name different things.

Kept apart from the feature code because they grow with every near miss found (tests/fixtures/near_miss_pairs.jsonl):
a list changes, the features stay. A word added here changes features only on pairs that contain it; refit
``scripts/fit_verifier.py`` after a change (verifier.json repeats nothing from here, so it still loads).
"""

from __future__ import annotations

NUMBER_WORDS = {  # not 'one': mostly a pronoun ("one can ...")
    w: str(i) for i, w in enumerate("_ _ two three four five six seven eight nine ten eleven twelve".split()) if i > 1
} | {"twenty": "20", "thirty": "30", "fifty": "50", "hundred": "100", "thousand": "1000", "million": "1000000"}
NEGATIONS = frozenset("not no never without cannot nor none nothing nobody neither nowhere".split())
WH_WORDS = frozenset("what why how where when who whom whose which".split())
STRICT_WH = frozenset("who when where why".split())
YES_NO = frozenset(
    "is are was were do does did can could should would will shall may might must have has had am".split()
)
STOPWORDS = frozenset(
    """a an the of to in on at for from by with about as into over is are was were be been being am do does did
    doing done have has had having i me my mine you your yours we our us he him his she her they them their it its
    this that these those there here and or but if then so than too very can could should would will shall may
    might must just also any some much many more most get got s t d ll re ve m one ones way ways best good
    really actually possible""".split()
)
_ANTONYM_TEXT = """enable disable|increase decrease|before after|buy sell|max min|maximum minimum|maximize minimize|
add remove|start stop|open close|on off|win lose|won lost|winner loser|up down|upload download|import export|
input output|inside outside|above below|over under|upper lower|high low|higher lower|more less|most least|best worst|
better worse|first last|old new|older newer|young old|cheap expensive|fast slow|faster slower|big small|bigger smaller|
large small|larger smaller|long short|longer shorter|heavy light|hot cold|good bad|positive negative|true false|yes no|
pass fail|success failure|rich poor|love hate|like dislike|agree disagree|accept reject|include exclude|allow deny|
allow block|show hide|push pull|send receive|lend borrow|encrypt decrypt|encode decode|compress decompress|
cause effect|install uninstall|lock unlock|connect disconnect|mount unmount|zip unzip|block unblock|follow unfollow|
subscribe unsubscribe|activate deactivate|login logout|signin signout|upgrade downgrade|ascending descending|
forward backward|left right|east west|north south|male female|man woman|men women|boy girl|he she|his her|him her|
husband wife|boyfriend girlfriend|cause prevent|soft hard|gain lose|raw cooked|father mother|son daughter|
brother sister|king queen|public private|legal illegal|valid invalid|possible impossible|pros cons|causes effects|
advantages disadvantages|benefits drawbacks|strengths weaknesses|rise fall|gain loss|profit loss|arrive depart|
arrival departure|enter exit|morning evening|day night|summer winter|early late|earlier later|past future|always never|
all none|everyone nobody|plus minus|odd even|light dark|white black|wet dry|full empty|safe dangerous|
healthy unhealthy|happy sad|internal external|online offline|vertical horizontal|physical mental|
undergraduate graduate|bachelor master|junior senior|employer employee|minor major|teacher student|buyer seller|
client server|host guest|parent child|parents children|arrive leave|cheaper expensive|cheapest expensive|
inbound outbound|incoming outgoing|ingress egress|uppercase lowercase|synchronous asynchronous|symmetric asymmetric"""
# Words of which any two name different things (when, which day, which month): each pair counts as antonyms.
_EXCLUSIVE_TEXT = """today tomorrow yesterday tonight|morning afternoon evening night|
monday tuesday wednesday thursday friday saturday sunday|spring summer autumn winter|
january february march april june july august september october november december"""
# Two ends of one scale, each word of one end against each of the other: how much answer a prompt asks for.
_OPPOSED = (
    ("brief concise short summary word", "detail detailed thorough lengthy comprehensive"),
    ("all every always", "some sometimes few"),  # not 'most': it also makes superlatives
)
ANTONYMS: dict[str, set[str]] = {}


def _oppose(words: list[str], others: list[str]) -> None:
    """Each word counts as the antonym of each of ``others`` (itself excepted)."""
    for x in words:
        ANTONYMS.setdefault(x, set()).update(w for w in others if w != x)


for _group in (_ANTONYM_TEXT + "|" + _EXCLUSIVE_TEXT).replace("\n", "").split("|"):
    _oppose(_group.split(), _group.split())
for _left, _right in _OPPOSED:
    _oppose(_left.split(), _right.split())
    _oppose(_right.split(), _left.split())
# Verbs whose 'in' and 'out' are opposites ("zoom in" / "zoom out"): the tokenizer joins each into one word
# ('zoomin', 'zoomout'), whose pair counts as antonyms; a bare 'in'/'out' cannot (it is 'find out', 'in 2016').
PHRASAL_IN_OUT = frozenset("zoom sign log opt check plug clock cash scale roll tune phase fade breathe".split())
for _verb in PHRASAL_IN_OUT:
    _oppose([_verb + "in"], [_verb + "out"])
    _oppose([_verb + "out"], [_verb + "in"])

# Contractions typed without the apostrophe, as their spelled form ('dont' must negate as "don't" does).
BARE_CONTRACTIONS = {
    w.replace("'", ""): w
    for w in """what's that's there's where's who's how's it's don't doesn't didn't can't won't isn't aren't
    wasn't weren't couldn't shouldn't wouldn't haven't hasn't i'm i've you're they're""".split()
    if w != "it's"  # 'its' is a word
}
