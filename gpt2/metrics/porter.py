"""The Porter stemmer as nltk runs it by default: the stemmer behind rouge-score's use_stemmer=True.

M. F. Porter, 1980, "An algorithm for suffix stripping", Program 14(3): 130-137, with the changes
nltk's `PorterStemmer()` makes in its default mode, NLTK_EXTENSIONS (some are Martin Porter's own
later fixes, some nltk's). `stem(word)` equals `nltk.stem.porter.PorterStemmer().stem(word)`;
tests/test_porter.py checks it word for word on Wikitext-2 and on thousands of drawn words.

The idea. A word is read as consonants (c) and vowels (v): a, e, i, o, u are vowels, and so is a y
that follows a consonant ("happy" is c v c c v). Collapsing runs, every word has the form
[C](VC)^m[V]; m is the *measure* (tree: 0, trouble: 1, private: 2), a rough count of syllables.
Suffixes come off in five steps. Each step is a list of rules "(condition) SUFFIX -> REPLACEMENT";
in a step only the rule with the longest matching suffix is considered (our tables list longer
suffixes first, so that is the first match), and if its condition on the stem (the word without
the suffix) fails the word is left as it is: no shorter suffix is tried. Most conditions ask for a
stem of some measure, so that "rate" keeps its "ate" while "activate" loses it.

Where nltk's default differs from the 1980 paper the comment says "NLTK:". In short: a small table
of irregular words; words of one or two letters unchanged; -ies/-ied in four-letter words keep
their e (ties -> tie); y -> i only after a consonant that is not the first letter (spy -> spi,
enjoy stays); a vowel-consonant stem of two letters counts as *o; in step 2 bli -> ble replaces
abli -> able, alli -> al is tried first and step 2 then runs again, and fulli -> ful, logi -> log
are added.
"""

from __future__ import annotations

from functools import lru_cache

# NLTK: irregular forms, stemmed by this table alone ("sky" would otherwise become "ski").
_IRREGULAR = {
    "sky": "sky", "skies": "sky", "dying": "die", "lying": "lie", "tying": "tie", "news": "news",
    "innings": "inning", "inning": "inning", "outings": "outing", "outing": "outing",
    "cannings": "canning", "canning": "canning", "howe": "howe",
    "proceed": "proceed", "exceed": "exceed", "succeed": "succeed",
}


# ---------------------------------------------------------------------------------------------
# The paper's vocabulary: consonants and vowels, the measure m, and the conditions *v*, *d, *o.


def _cv(word: str) -> str:
    """'c' or 'v' per letter. A consonant is a letter other than a, e, i, o, u, and other than a
    y preceded by a consonant (so in "toy" t and y are consonants, in "syzygy" s, z and g are).
    Digits count as consonants."""
    out = []
    for i, ch in enumerate(word):
        vowel = ch in "aeiou" or (ch == "y" and i > 0 and out[-1] == "c")
        out.append("v" if vowel else "c")
    return "".join(out)


def _measure(stem: str) -> int:
    """m in [C](VC)^m[V]: the number of vowel-to-consonant changes."""
    return _cv(stem).count("vc")


def _has_vowel(stem: str) -> bool:
    """*v*: the stem contains a vowel."""
    return "v" in _cv(stem)


def _ends_double_consonant(word: str) -> bool:
    """*d: the word ends with two equal consonants (-tt, -ss, ...)."""
    return len(word) >= 2 and word[-1] == word[-2] and _cv(word)[-1] == "c"


def _ends_cvc(word: str) -> bool:
    """*o: the word ends consonant-vowel-consonant, the last not w, x or y (-wil, -hop).
    NLTK: a two-letter word vowel-consonant counts too (any consonant: "ow" is *o)."""
    cv = _cv(word)
    return (cv[-3:] == "cvc" and word[-1] not in "wxy") or cv == "vc"


def _replace(word: str, rules: tuple[tuple[str, str], ...], min_measure: int) -> str:
    """Apply the first rule whose suffix `word` ends with, if the stem's m >= min_measure; else
    (or when no suffix matches) return `word` unchanged."""
    for suffix, replacement in rules:
        if word.endswith(suffix):
            stem = word[: len(word) - len(suffix)]
            return stem + replacement if _measure(stem) >= min_measure else word
    return word


# ---------------------------------------------------------------------------------------------
# The five steps, in the order the word goes through them.


def _step1a(word: str) -> str:
    """Plurals: sses -> ss (caresses), ies -> i (ponies), ss -> ss (caress), s -> '' (cats)."""
    if len(word) == 4 and word.endswith("ies"):  # NLTK: ties -> tie, dies -> die (but flies -> fli)
        return word[:-1]
    return _replace(word, (("sses", "ss"), ("ies", "i"), ("ss", "ss"), ("s", "")), 0)


def _step1b(word: str) -> str:
    """Past tenses and gerunds: (m>0) eed -> ee (agreed; feed stays), (*v*) ed -> '' (plastered;
    bled stays), (*v*) ing -> '' (motoring; sing stays). After removing ed/ing, tidy the stem up."""
    if word.endswith("ied"):  # NLTK: ied -> ie in four-letter words (died), else -> i (spied -> spi)
        return word[:-1] if len(word) == 4 else word[:-2]
    if word.endswith("eed"):  # the longest suffix: when its condition fails, ed is not tried
        return word[:-1] if _measure(word[:-3]) > 0 else word
    for suffix in ("ed", "ing"):
        stem = word[: -len(suffix)]
        if word.endswith(suffix) and _has_vowel(stem):
            return _step1b_tidy(stem)
    return word


def _step1b_tidy(stem: str) -> str:
    """After ed/ing came off: at -> ate (conflat(ed)), bl -> ble (troubl(ed)), iz -> ize (siz(ed));
    (*d and not *l, *s, *z) -> one letter (hopp(ing) -> hop; fall(ing) stays); (m=1 and *o) -> add
    an e (fil(ing) -> file). The e put back lets steps 2-4 see -ate, -ble, -ize; step 5 may drop it."""
    if stem.endswith(("at", "bl", "iz")):
        return stem + "e"
    if _ends_double_consonant(stem):
        return stem if stem[-1] in "lsz" else stem[:-1]
    if _measure(stem) == 1 and _ends_cvc(stem):
        return stem + "e"
    return stem


def _step1c(word: str) -> str:
    """y -> i (happy -> happi), so that happy and happiness meet.
    Paper: (*v*) y -> i. NLTK: only when the y follows a consonant that is not the word's first
    letter (enjoy stays, spy -> spi; the paper would give enjoi and keep spy)."""
    if word.endswith("y") and len(word) > 2 and _cv(word[:-1])[-1] == "c":
        return word[:-1] + "i"
    return word


_STEP2 = (  # (m>0) double suffixes -> single ones
    ("ational", "ate"), ("tional", "tion"), ("enci", "ence"), ("anci", "ance"), ("izer", "ize"),
    ("bli", "ble"),  # NLTK (and Porter's later versions): the paper's rule is abli -> able
    ("entli", "ent"), ("eli", "e"), ("ousli", "ous"), ("ization", "ize"), ("ation", "ate"),
    ("ator", "ate"), ("alism", "al"), ("iveness", "ive"), ("fulness", "ful"), ("ousness", "ous"),
    ("aliti", "al"), ("iviti", "ive"), ("biliti", "ble"),
    ("fulli", "ful"),  # NLTK: not in the paper
)


def _step2(word: str) -> str:
    """(m>0) double suffixes to single ones: relational -> relate, conditional -> condition,
    digitizer -> digitize, operator -> operate, hopefulness -> hopeful, sensibiliti -> sensible, ..."""
    if word.endswith("alli"):
        # Paper: (m>0) alli -> al, one rule of the table. NLTK: tried first, and on success step 2
        # runs again on the result (radicalli -> radical; rationalli -> rational -> rate).
        return _step2(word[:-2]) if _measure(word[:-4]) > 0 else word
    if word.endswith("logi"):
        # NLTK: logi -> log, with the l counted in the stem, so that short stems work like long
        # ones (geologi -> geolog, as archaeologi -> archaeolog). Not in the paper.
        return word[:-1] if _measure(word[:-3]) > 0 else word
    return _replace(word, _STEP2, 1)


_STEP3 = (("icate", "ic"), ("ative", ""), ("alize", "al"), ("iciti", "ic"), ("ical", "ic"),
          ("ful", ""), ("ness", ""))


def _step3(word: str) -> str:
    """(m>0) -ic-, -ful, -ness etc.: triplicate -> triplic, formative -> form, formalize -> formal,
    electrical -> electric, hopeful -> hope, goodness -> good."""
    return _replace(word, _STEP3, 1)


_STEP4 = (("al", ""), ("ance", ""), ("ence", ""), ("er", ""), ("ic", ""), ("able", ""), ("ible", ""),
          ("ant", ""), ("ement", ""), ("ment", ""), ("ent", ""), ("ou", ""), ("ism", ""), ("ate", ""),
          ("iti", ""), ("ous", ""), ("ive", ""), ("ize", ""))


def _step4(word: str) -> str:
    """(m>1) remove a last suffix: revival -> reviv, allowance -> allow, airliner -> airlin,
    adjustable -> adjust, replacement -> replac, effective -> effect, bowdlerize -> bowdler, ...;
    and (m>1 and the stem ends in s or t) ion -> '' (adoption -> adopt; but opinion stays)."""
    if word.endswith("ion"):  # no other suffix of this step ends a word ending in -ion
        stem = word[:-3]
        return stem if _measure(stem) > 1 and stem.endswith(("s", "t")) else word
    return _replace(word, _STEP4, 2)


def _step5a(word: str) -> str:
    """A final e: (m>1) e -> '' (probate -> probat; rate stays), (m=1 and not *o) e -> ''
    (cease -> ceas; but hope, whose stem hop is *o, stays)."""
    if word.endswith("e"):
        stem = word[:-1]
        m = _measure(stem)
        if m > 1 or (m == 1 and not _ends_cvc(stem)):
            return stem
    return word


def _step5b(word: str) -> str:
    """(m>1 and *d and *l) -> one letter: controll -> control; roll stays."""
    if word.endswith("ll") and _measure(word[:-1]) > 1:
        return word[:-1]
    return word


@lru_cache(maxsize=1 << 16)  # rouge over a corpus stems the same few thousand words again and again
def stem(word: str) -> str:
    """The Porter stem of `word`, lowercased: exactly `nltk.stem.porter.PorterStemmer().stem(word)`."""
    lowered = word.lower()
    if lowered in _IRREGULAR:
        return _IRREGULAR[lowered]
    if len(word) <= 2:  # NLTK: too short to stem (not in the paper). nltk measures before lowering
        return lowered
    for step in (_step1a, _step1b, _step1c, _step2, _step3, _step4, _step5a, _step5b):
        lowered = step(lowered)
    return lowered
