#!/usr/bin/env python3
"""Build the quick-start DPO preference data set (stdlib only, deterministic).

Preference: the chosen answer is ONE short direct sentence that starts by
restating the subject of the question ("The capital of Japan is Tokyo.");
the rejected answer carries the same correct fact but wraps it in a long,
hedging, rambling reply (filler openers, hedges, tangents, sign-offs).
The rejected wrapping is drawn from several structures and phrase pools so
the difference is "concise and direct" rather than a single token.

Usage:
    python3 scripts/make_quickstart_data.py            # write the two files
    python3 scripts/make_quickstart_data.py --check    # validate them, print stats
"""
import argparse
import json
import random
import re
import sys
from pathlib import Path

SEED = 20240607
EVAL_FRACTION = 0.25
ROOT = Path(__file__).resolve().parent.parent
TRAIN_PATH = ROOT / "recipes" / "data" / "quickstart-train.jsonl"
EVAL_PATH = ROOT / "recipes" / "data" / "quickstart-eval.jsonl"

# Word bounds enforced by --check (and by generation).
CHOSEN_WORDS = (3, 30)
REJECTED_WORDS = (30, 60)
PROMPT_WORDS = (2, 30)

# (question, one-sentence answer that starts by restating the subject)
QA = {
    "geography": [
        ("What is the capital of Japan?", "The capital of Japan is Tokyo."),
        ("Which ocean is the largest?", "The Pacific Ocean is the largest ocean on Earth."),
        ("Where is the Sahara Desert?", "The Sahara Desert is in North Africa."),
        ("What is the longest river in South America?", "The longest river in South America is the Amazon."),
        ("Tell me the capital of Australia.", "The capital of Australia is Canberra."),
        ("How many continents are there?", "The world has seven continents in the most common convention."),
        ("What's the tallest mountain in the world?", "The tallest mountain above sea level is Mount Everest, at about 8,849 metres."),
        ("Which country is Machu Picchu in?", "Machu Picchu is in Peru, high in the Andes mountains."),
        ("What is the capital of Canada?", "The capital of Canada is Ottawa."),
        ("Which is the smallest country in the world?", "The smallest country in the world is Vatican City."),
        ("What language do most people speak in Brazil?", "The main language of Brazil is Portuguese."),
        ("What is the capital of Kenya?", "The capital of Kenya is Nairobi."),
        ("Which river flows through Paris?", "The river that flows through Paris is the Seine."),
        ("What's the largest island in the world?", "The largest island in the world is Greenland."),
        ("Where is Mount Kilimanjaro?", "Mount Kilimanjaro is in Tanzania, in East Africa."),
        ("Name the capital of Spain.", "The capital of Spain is Madrid."),
        ("Which sea lies between Europe and Africa?", "The sea between Europe and Africa is the Mediterranean Sea."),
        ("Which country is shaped like a boot?", "The country shaped like a boot is Italy."),
        ("What is the capital city of South Korea?", "The capital of South Korea is Seoul."),
        ("What is the deepest point in the ocean?", "The deepest point in the ocean is the Challenger Deep in the Mariana Trench."),
        ("What's the capital of Argentina?", "The capital of Argentina is Buenos Aires."),
        ("Which US state is the biggest by area?", "The largest US state by area is Alaska."),
        ("What is the capital of Egypt?", "The capital of Egypt is Cairo."),
        ("Which river is the longest in Europe?", "The longest river in Europe is the Volga."),
        ("Where is the Great Barrier Reef?", "The Great Barrier Reef is off the northeast coast of Australia."),
        ("What is the capital of Norway?", "The capital of Norway is Oslo."),
        ("Which continent is Mongolia in?", "Mongolia is in Asia, between Russia and China."),
        ("In which city is the Eiffel Tower?", "The Eiffel Tower is in Paris, France."),
    ],
    "science": [
        ("Why is the sky blue?", "The sky looks blue because air molecules scatter blue sunlight more than red light."),
        ("What is photosynthesis?", "Photosynthesis is how plants use light to turn water and carbon dioxide into sugar and oxygen."),
        ("At what temperature does water boil at sea level?", "Water boils at 100 degrees Celsius at sea level."),
        ("How many planets are in our solar system?", "Our solar system has eight planets."),
        ("What is the chemical symbol for gold?", "The chemical symbol for gold is Au."),
        ("Which gas do plants take in from the air?", "Plants take in carbon dioxide from the air."),
        ("What is the closest star to Earth?", "The closest star to Earth is the Sun."),
        ("What does H2O mean?", "H2O is the chemical formula for water: two hydrogen atoms and one oxygen atom."),
        ("Which planet is called the Red Planet?", "The Red Planet is Mars."),
        ("What causes the seasons?", "The seasons are caused by the tilt of Earth's axis as it orbits the Sun."),
        ("How fast does light travel?", "Light travels at about 300,000 kilometres per second in a vacuum."),
        ("What's the biggest planet in the solar system?", "The biggest planet in the solar system is Jupiter."),
        ("What are the three common states of matter?", "The three common states of matter are solid, liquid and gas."),
        ("What does DNA stand for?", "DNA stands for deoxyribonucleic acid."),
        ("Can you explain what gravity is?", "Gravity is the force that pulls masses toward each other and keeps us on the ground."),
        ("Why do we have day and night?", "Day and night happen because Earth spins on its axis about once every 24 hours."),
        ("What is the hardest natural material?", "The hardest natural material is diamond."),
        ("What is an atom made of?", "An atom is made of protons and neutrons in a nucleus, surrounded by electrons."),
        ("How many bones does an adult human have?", "An adult human has 206 bones."),
        ("Which organ pumps blood around the body?", "The organ that pumps blood around the body is the heart."),
        ("What is the freezing point of water in Fahrenheit?", "The freezing point of water is 32 degrees Fahrenheit."),
        ("What makes an animal a mammal?", "A mammal is a warm-blooded animal with hair that feeds its young on milk."),
        ("Which gas makes up most of the air?", "Most of the air is nitrogen, about 78 percent."),
        ("Why does ice float?", "Ice floats because it is less dense than liquid water."),
        ("How fast does sound travel in air?", "Sound travels through air at about 343 metres per second at room temperature."),
        ("What causes ocean tides?", "Ocean tides are caused mainly by the pull of the Moon's gravity."),
        ("What is a light-year?", "A light-year is the distance light travels in one year, about 9.46 trillion kilometres."),
        ("How long does it take Earth to go around the Sun?", "Earth takes about 365.25 days to go around the Sun."),
        ("Why do leaves change colour in autumn?", "Leaves change colour in autumn because their green chlorophyll breaks down and reveals yellow and orange pigments."),
        ("What is a volcano?", "A volcano is an opening in Earth's crust where molten rock, ash and gas escape."),
        ("How does rain form?", "Rain forms when water vapour in clouds condenses into droplets heavy enough to fall."),
        ("What causes a rainbow?", "A rainbow is caused by raindrops bending and reflecting sunlight into its colours."),
        ("What causes thunder?", "Thunder is the sound of air expanding suddenly when lightning heats it."),
        ("How do earthquakes happen?", "Earthquakes happen when rocks along a fault suddenly slip and release stored energy."),
    ],
    "cooking": [
        ("How do I hard-boil an egg?", "To hard-boil an egg, cook it in boiling water for about 10 minutes, then cool it in cold water."),
        ("How long should I cook dried pasta?", "Dried pasta usually cooks in 8 to 12 minutes in boiling salted water."),
        ("What's the best way to store fresh herbs?", "Most fresh herbs keep best in the fridge, wrapped in a damp paper towel."),
        ("How can I make rice fluffy?", "Fluffy rice comes from rinsing it first, using the right amount of water and letting it rest covered."),
        ("Why do recipes say to rest meat after cooking?", "Resting meat lets its juices settle so it stays moist when you cut it."),
        ("What does sauté mean in cooking?", "To sauté means to cook food quickly in a little fat over fairly high heat."),
        ("How do I know when bread is done baking?", "Bread is done baking when it sounds hollow as you tap the bottom."),
        ("What can I use instead of buttermilk?", "A good buttermilk substitute is a cup of milk with a tablespoon of lemon juice, left for five minutes."),
        ("How do I stop crying when I cut onions?", "Cutting onions makes you cry less if you chill them first and use a sharp knife."),
        ("How do you make a simple vinaigrette?", "A simple vinaigrette is three parts oil to one part vinegar, with salt, pepper and a little mustard."),
        ("Why does bread go stale?", "Bread goes stale mainly because its starch recrystallizes and the crumb dries out."),
        ("What temperature should chicken be cooked to?", "Chicken should be cooked to an internal temperature of 74 degrees Celsius, or 165 degrees Fahrenheit."),
        ("How do I melt chocolate without burning it?", "Chocolate melts without burning if you heat it gently over simmering water and stir often."),
        ("What's the difference between baking soda and baking powder?", "Baking soda needs an acid to react, while baking powder already contains its own acid."),
        ("How do I keep a cut avocado from turning brown?", "A cut avocado browns more slowly if you brush it with lemon juice and wrap it tightly."),
        ("How can I tell if an egg is fresh?", "A fresh egg sinks and lies flat in a bowl of water, while an old one floats."),
        ("What does al dente mean?", "Al dente means pasta cooked until tender but still slightly firm to the bite."),
        ("How do I make scrambled eggs creamy?", "Creamy scrambled eggs come from cooking them slowly over low heat and stirring often."),
        ("Why do people salt pasta water?", "Salting pasta water seasons the pasta from the inside as it cooks."),
        ("How long do cooked leftovers last in the fridge?", "Cooked leftovers usually keep for three to four days in the fridge."),
        ("What is a roux?", "A roux is flour and fat cooked together and used to thicken sauces."),
        ("How do I keep pasta from sticking together?", "Pasta sticks less if you use plenty of boiling water and stir it in the first few minutes."),
        ("What is the best way to thaw frozen meat?", "Frozen meat is best thawed slowly in the fridge."),
        ("How do I make a cake more moist?", "A cake stays moist if you measure flour carefully and avoid overbaking it."),
        ("How do you caramelize onions?", "Caramelized onions come from cooking sliced onions slowly in butter or oil over low heat for about 40 minutes."),
        ("Can you explain what kneading dough does?", "Kneading dough develops gluten, which makes bread stretchy and helps it rise."),
    ],
    "computing": [
        ("What is RAM?", "RAM is a computer's short-term working memory for the programs that are running."),
        ("What does CPU stand for?", "CPU stands for central processing unit."),
        ("How do I take a screenshot on Windows?", "A screenshot on Windows can be taken by pressing Windows key, Shift and S together."),
        ("What is a web browser?", "A web browser is a program for viewing websites, such as Firefox, Chrome or Safari."),
        ("What's the difference between hardware and software?", "Hardware is the physical parts of a computer, and software is the programs that run on it."),
        ("What is an operating system?", "An operating system is the software that manages a computer's hardware and runs other programs."),
        ("How do I make a strong password?", "A strong password is long and unique, such as several random words, and is never reused."),
        ("What is Wi-Fi?", "Wi-Fi is a way of connecting devices to a network and the internet by radio."),
        ("What does HTML stand for?", "HTML stands for HyperText Markup Language."),
        ("What is a bit in computing?", "A bit is the smallest unit of data in computing, holding a 0 or a 1."),
        ("How many bits are in a byte?", "A byte has eight bits."),
        ("What is cloud storage?", "Cloud storage keeps your files on remote servers that you reach over the internet."),
        ("Why should I keep my software updated?", "Software updates fix bugs and security holes, so installing them keeps your device safer."),
        ("What is a file extension?", "A file extension is the end of a file name, such as .txt or .jpg, that shows its type."),
        ("How do I copy and paste on a Mac?", "Copy and paste on a Mac are Command+C and Command+V."),
        ("What is a programming language?", "A programming language is a formal language for writing instructions a computer can run."),
        ("What does a router do?", "A router directs traffic between the devices on your network and the internet."),
        ("What is phishing?", "Phishing is a scam in which someone pretends to be trustworthy to trick you into giving away passwords or money."),
        ("What is Python used for?", "Python is a readable programming language used for scripting, data analysis, web development and more."),
        ("What is an IP address?", "An IP address is a number that identifies a device on a network."),
        ("What does a graphics card do?", "A graphics card draws images on the screen and speeds up highly parallel calculations."),
        ("What is open-source software?", "Open-source software is software whose source code anyone may read, change and share under its licence."),
        ("How do I free up space on my phone?", "Phone storage frees up when you delete unused apps and move photos and videos off the phone."),
        ("What is a spreadsheet?", "A spreadsheet is a grid of cells for organizing data and calculating with formulas."),
        ("What is a computer virus?", "A computer virus is malicious software that copies itself and spreads between files or devices."),
        ("What does a URL mean?", "A URL is the address of a page or file on the web."),
        ("Why is my computer running slowly?", "A slow computer is often caused by too many programs running at once or a nearly full disk."),
        ("What is two-factor authentication?", "Two-factor authentication is a login that needs a second proof, such as a code on your phone, besides your password."),
    ],
    "everyday": [
        ("How do I get a coffee stain out of a shirt?", "A fresh coffee stain usually comes out if you rinse it in cold water and rub in a little detergent before washing."),
        ("How can I fall asleep faster?", "Falling asleep is easier with a regular bedtime, no screens before bed and a cool, dark room."),
        ("How often should I water a cactus?", "A cactus needs water only every two to four weeks, once the soil is completely dry."),
        ("How do I unclog a sink?", "A clogged sink can often be cleared with a plunger or by cleaning out the trap underneath."),
        ("How can I save money on groceries?", "Grocery bills drop when you plan meals, shop with a list and compare unit prices."),
        ("How do I get rid of fruit flies?", "Fruit flies can be trapped with a bowl of cider vinegar and a drop of dish soap."),
        ("What's the best way to learn a new language?", "The best way to learn a new language is steady daily practice, especially speaking and listening."),
        ("How do I clean a cast iron pan?", "A cast iron pan is cleaned with hot water and a brush, then dried fully and lightly oiled."),
        ("How can I keep cut flowers fresh longer?", "Cut flowers last longer if you trim the stems at an angle and change the water every two days."),
        ("How should I store batteries?", "Batteries are best stored in a cool, dry place away from metal objects."),
        ("How can I lower my electricity bill?", "An electricity bill drops if you switch to LED bulbs and turn off devices you are not using."),
        ("How do I remove a splinter?", "A splinter can usually be removed with clean tweezers, pulling at the same angle it went in."),
        ("How do I stay motivated to exercise?", "Exercise motivation lasts longer with a fixed schedule, realistic goals and an activity you enjoy."),
        ("How do I write a good email subject line?", "A good email subject line is short and specific and says what the email is about."),
        ("What should a basic first aid kit contain?", "A basic first aid kit contains bandages, gauze, tape, antiseptic wipes, tweezers and pain relievers."),
        ("How can I remember people's names better?", "Names are easier to remember if you repeat them aloud when you meet someone."),
        ("How do I keep houseplants healthy?", "Houseplants stay healthy with the right light, water only when the soil is dry and a pot that drains."),
        ("How do I prepare for a job interview?", "A job interview goes better if you research the company and practise answers to common questions."),
        ("How should I wash a wool sweater?", "A wool sweater should be hand-washed in cool water with wool detergent and dried flat."),
        ("How do I fix a squeaky door?", "A squeaky door usually goes quiet with a little oil or silicone spray on the hinges."),
        ("How can I boil water faster?", "Water boils faster with a lid on the pot."),
        ("How do I pack a suitcase efficiently?", "A suitcase holds more if you roll your clothes and fill shoes with small items."),
        ("How do I stop my glasses fogging up?", "Glasses fog less with an anti-fog spray and, when you wear a mask, a snug fit over the nose."),
        ("How often should I replace my toothbrush?", "A toothbrush should be replaced every three to four months, or sooner if the bristles are frayed."),
        ("How do I get rid of a bad smell in the fridge?", "A smelly fridge freshens up if you throw out old food, wipe it clean and leave an open box of baking soda inside."),
        ("How can I be more productive when working from home?", "Working from home is more productive with a set schedule, a separate workspace and regular breaks."),
    ],
    "general": [
        ("Who wrote Romeo and Juliet?", "Romeo and Juliet was written by William Shakespeare."),
        ("Who painted the Mona Lisa?", "The Mona Lisa was painted by Leonardo da Vinci."),
        ("When did World War II end?", "World War II ended in 1945."),
        ("Who was the first person to walk on the Moon?", "The first person to walk on the Moon was Neil Armstrong, in 1969."),
        ("How many days are in a leap year?", "A leap year has 366 days."),
        ("What is the Great Wall of China?", "The Great Wall of China is a series of ancient fortifications across northern China."),
        ("Who invented the telephone?", "The telephone was patented by Alexander Graham Bell in 1876."),
        ("How many players does a soccer team have on the field?", "A soccer team has eleven players on the field."),
        ("What currency is used in Japan?", "The currency of Japan is the yen."),
        ("Who composed the Moonlight Sonata?", "The Moonlight Sonata was composed by Ludwig van Beethoven."),
        ("What are the primary colours of light?", "The primary colours of light are red, green and blue."),
        ("How many sides does a hexagon have?", "A hexagon has six sides."),
        ("Who came up with the theory of relativity?", "The theory of relativity was developed by Albert Einstein."),
        ("In what year did the Titanic sink?", "The Titanic sank in 1912."),
        ("What is the largest animal on Earth?", "The largest animal on Earth is the blue whale."),
        ("How many strings does a standard guitar have?", "A standard guitar has six strings."),
        ("What is a haiku?", "A haiku is a short Japanese poem of three lines with five, seven and five syllables."),
        ("What is the square root of 144?", "The square root of 144 is 12."),
        ("What is 15 percent of 200?", "Fifteen percent of 200 is 30."),
        ("How many minutes are in a day?", "A day has 1,440 minutes."),
        ("What is a prime number?", "A prime number is a whole number greater than 1 whose only divisors are 1 and itself."),
        ("What is the fastest land animal?", "The fastest land animal is the cheetah."),
        ("How many legs does a spider have?", "A spider has eight legs."),
        ("What do bees make from nectar?", "Bees make honey from nectar."),
        ("What is the tallest animal?", "The tallest animal is the giraffe."),
        ("Who wrote Pride and Prejudice?", "Pride and Prejudice was written by Jane Austen."),
        ("Which language has the most native speakers?", "The language with the most native speakers is Mandarin Chinese."),
        ("What is a synonym?", "A synonym is a word with the same or nearly the same meaning as another word."),
        ("What is the plural of mouse?", "The plural of mouse is mice."),
        ("What does the Pythagorean theorem say?", "The Pythagorean theorem says that in a right triangle the square of the hypotenuse equals the sum of the squares of the other two sides."),
        ("How much sleep do adults need?", "Most adults need seven to nine hours of sleep a night."),
        ("Why is exercise good for you?", "Exercise is good for you because it strengthens the heart and muscles, lifts mood and lowers the risk of many diseases."),
        ("What is vitamin C good for?", "Vitamin C helps the body repair tissue, absorb iron and support the immune system."),
        ("Why do cats purr?", "Cats purr mostly when they are content, and sometimes to soothe themselves."),
        ("How long do dogs usually live?", "Dogs usually live about 10 to 13 years, and small breeds often live longer."),
        ("What do giant pandas eat?", "Giant pandas eat almost nothing but bamboo."),
        ("Why do birds migrate?", "Birds migrate to reach places with more food and better conditions for raising their young."),
        ("How many hours are in a week?", "A week has 168 hours."),
        ("What is an adjective?", "An adjective is a word that describes a noun, such as big, red or happy."),
        ("Who was the first president of the United States?", "The first president of the United States was George Washington."),
        ("What is the boiling point of water in Fahrenheit?", "The boiling point of water at sea level is 212 degrees Fahrenheit."),
        ("How many weeks are in a year?", "A year has 52 weeks plus one or two days."),
    ],
}

# Neutral wrappers that vary prompt phrasing without changing the question.
PREFIXES = ["Quick question: ", "Hi! ", "I was wondering: ", "Can you help me? ", "Hey, ", "Hello, "]
SUFFIXES = [" Thanks!", " Thank you.", " I'm curious.", " Any idea?"]

# Pieces of the rejected style: padding, hedging and tangents around the same
# correct fact. None of them state anything about the topic.
OPENERS = [
    "Great question!",
    "Oh, that's a really interesting thing to ask about.",
    "Well, let me think about this one for a moment.",
    "Hmm, there's quite a lot that could be said here.",
    "Sure, I'd be happy to help with that, and I'll try to be thorough.",
    "That's a good thing to be curious about, honestly.",
    "Okay, so this is one of those topics people ask about a lot.",
    "Thanks for asking!",
    "So, before I answer, I want to give a little bit of context.",
    "Ah, this is a classic question.",
    "Absolutely, this is something a lot of people wonder about.",
    "Interesting!",
]
HEDGES = [
    "There are a few different ways to look at it, and I want to be careful not to oversimplify.",
    "I'll try to keep it clear, although it's easy to go off on tangents with this kind of thing.",
    "It's worth taking a moment to think it through rather than rushing to an answer.",
    "People sometimes explain this in slightly different ways, so bear with me.",
    "Let me walk through it as best I can, step by step.",
    "I don't want to give you an answer that's too short, so here goes.",
    "It can help to start with some background before getting to the main point.",
]
LEADINS_COMMA = [
    "Basically, as far as I understand it,",
    "To put it simply, and I'm summarizing a bit here,",
    "If I remember correctly,",
    "Generally speaking, I believe",
    "From what I know,",
    "In most explanations you'll come across,",
]
LEADINS_COLON = [
    "Anyway, to get to the point:",
    "So here's the main thing:",
    "But to answer what you asked:",
    "Okay, here's what I'd say:",
]
POSTS = [
    "Of course, there's a lot more detail to it than that, and different sources may phrase it a little differently.",
    "That said, it could be worth reading a bit more, since there's more to it than I can cover here.",
    "It's one of those things that seems simple at first but gets more interesting the more you think about it.",
    "I might not have covered every angle, so keep that in mind.",
    "There's a whole lot of background behind that, which people have written about at length.",
]
CLOSERS = [
    "I hope that helps, and let me know if you have any other questions!",
    "Anyway, that's my best attempt at an explanation.",
    "Hopefully that makes sense!",
    "Feel free to ask if anything was unclear.",
    "I hope this was useful in some way.",
]
RESTATES = [
    "So you're asking: \"{q}\"",
    "You want to know: \"{q}\"",
    "Let's see, the question is: \"{q}\"",
]

# First words of answers that may be lower-cased after a comma lead-in
# (everything else is a proper noun or an acronym and keeps its capital).
LOWERABLE = {
    "a", "al", "an", "baking", "batteries", "bees", "birds", "bread", "caramelized",
    "cats", "chicken", "chocolate", "cloud", "cooked", "copy", "creamy", "cut",
    "cutting", "day", "dogs", "dried", "earthquakes", "exercise", "falling", "fifteen",
    "fluffy", "fresh", "frozen", "fruit", "giant", "glasses", "gravity", "grocery",
    "hardware", "houseplants", "ice", "kneading", "leaves", "light", "most", "names",
    "ocean", "open-source", "our", "pasta", "phishing", "phone", "photosynthesis",
    "plants", "rain", "resting", "salting", "software", "sound", "the", "thunder", "to",
    "two-factor", "vitamin", "water", "working",
}


def words(text):
    return len(text.split())


def lower_first(fact):
    first = fact.split()[0].rstrip(",").lower()
    if first in LOWERABLE:
        return fact[0].lower() + fact[1:]
    return fact


def make_prompt(question, rng):
    r = rng.random()
    if r < 0.15:
        prefix = rng.choice(PREFIXES)
        if prefix.endswith(", "):  # "Hey, what is ..."
            question = question[0].lower() + question[1:]
        return prefix + question
    if r < 0.25:
        return question + rng.choice(SUFFIXES)
    if r < 0.32:  # typed casually: no leading capital
        return question[0].lower() + question[1:]
    return question


def make_rejected(question, fact, rng):
    """Long, hedging, rambling reply that contains the same correct fact."""
    structure = rng.choice(["A", "B", "C", "D", "E"])
    if rng.random() < 0.5:
        fact_part = rng.choice(LEADINS_COMMA) + " " + lower_first(fact)
    else:
        fact_part = rng.choice(LEADINS_COLON) + " " + fact
    opener = rng.choice(OPENERS)
    hedge, hedge2 = rng.sample(HEDGES, 2)
    post = rng.choice(POSTS)
    closer = rng.choice(CLOSERS)
    restate = rng.choice(RESTATES).format(q=question)
    # Each structure lists (part, optional?) in order; optional parts are dropped
    # from the end of the list of optionals until the reply fits the word bound.
    if structure == "A":    # opener, hedge, fact, tangent, sign-off
        parts = [(opener, False), (hedge, True), (fact_part, False), (post, True), (closer, True)]
    elif structure == "B":  # opener, restate question, fact, sign-off
        parts = [(opener, False), (restate, True), (hedge, True), (fact_part, False), (closer, True)]
    elif structure == "C":  # starts hedging, fact, tangent
        parts = [(hedge, False), (fact_part, False), (post, True), (closer, True)]
    elif structure == "D":  # fact buried at the end after padding
        parts = [(opener, False), (hedge, True), (hedge2, True), (fact_part, False)]
    else:                   # fact first, then keeps going
        parts = [(fact, False), (post, False), (closer, True)]
    lo, hi = REJECTED_WORDS
    # Drop optional parts (last optional first) while too long.
    while words(" ".join(p for p, _ in parts)) > hi:
        optional = [i for i, (_, opt) in enumerate(parts) if opt]
        if not optional:
            break
        del parts[optional[-1]]
    parts = [p for p, _ in parts]
    # Pad with another tangent (before a trailing sign-off) if too short.
    extras = [x for x in POSTS if x not in parts]
    rng.shuffle(extras)
    for extra in extras:
        if words(" ".join(parts)) >= lo:
            break
        if words(" ".join(parts)) + words(extra) <= hi:
            at = len(parts) - 1 if parts[-1] in CLOSERS else len(parts)
            parts.insert(at, extra)
    text = " ".join(parts)
    return text


def record(prompt, chosen, rejected):
    return {
        "prompt": [{"role": "user", "content": prompt}],
        "chosen": [{"role": "assistant", "content": chosen}],
        "rejected": [{"role": "assistant", "content": rejected}],
    }


def norm(text):
    text = text.lower()
    for p in PREFIXES:
        if text.startswith(p.lower()):
            text = text[len(p):]
    for s in SUFFIXES:
        if text.endswith(s.lower()):
            text = text[: -len(s)]
    return re.sub(r"[^a-z0-9]+", " ", text).strip()


def build():
    rng = random.Random(SEED)
    train, evals = [], []
    for category in sorted(QA):
        items = list(QA[category])
        rng.shuffle(items)
        n_eval = round(len(items) * EVAL_FRACTION)
        for i, (q, a) in enumerate(items):
            prompt = make_prompt(q, rng)
            rec = record(prompt, a, make_rejected(q, a, rng))
            (evals if i < n_eval else train).append(rec)
    rng.shuffle(train)
    rng.shuffle(evals)
    return train, evals


def write(path, records):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        for r in records:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")


def check(paths):
    errors = []
    prompts = {}
    stats = {}
    for path in paths:
        recs = []
        with open(path, encoding="utf-8") as f:
            for n, line in enumerate(f, 1):
                where = f"{path.name}:{n}"
                try:
                    r = json.loads(line)
                except json.JSONDecodeError as e:
                    errors.append(f"{where}: invalid JSON ({e})")
                    continue
                if set(r) != {"prompt", "chosen", "rejected"}:
                    errors.append(f"{where}: keys {sorted(r)}")
                    continue
                n_errors = len(errors)
                for key, role in (("prompt", "user"), ("chosen", "assistant"), ("rejected", "assistant")):
                    msgs = r[key]
                    if not (isinstance(msgs, list) and len(msgs) == 1 and isinstance(msgs[0], dict)
                            and set(msgs[0]) == {"role", "content"}):
                        errors.append(f"{where}: {key} is not one {{role, content}} message")
                        continue
                    if msgs[0]["role"] != role:
                        errors.append(f"{where}: {key} role {msgs[0]['role']!r}, want {role!r}")
                    c = msgs[0]["content"]
                    if not isinstance(c, str) or not c.strip():
                        errors.append(f"{where}: {key} content empty")
                        continue
                    lo, hi = {"prompt": PROMPT_WORDS, "chosen": CHOSEN_WORDS, "rejected": REJECTED_WORDS}[key]
                    if not lo <= words(c) <= hi:
                        errors.append(f"{where}: {key} has {words(c)} words, want {lo}..{hi}")
                if len(errors) > n_errors:
                    continue
                p, c, rj = (r[k][0]["content"] for k in ("prompt", "chosen", "rejected"))
                if c == rj:
                    errors.append(f"{where}: chosen == rejected")
                key = norm(p)
                if key in prompts:
                    errors.append(f"{where}: prompt also at {prompts[key]}: {p!r}")
                prompts[key] = where
                recs.append((p, c, rj))
        stats[path.name] = recs
    train_eval = [{norm(p) for p, _, _ in recs} for recs in stats.values()]
    overlap = set.intersection(*train_eval) if len(train_eval) > 1 else set()
    for name, recs in stats.items():
        if not recs:
            errors.append(f"{name}: no records")
            continue
        cw = [words(c) for _, c, _ in recs]
        rw = [words(r) for _, _, r in recs]
        pw = [words(p) for p, _, _ in recs]
        # Rough token estimate: ~1.4 tokens a word plus ~45 for system prompt and template.
        longest = max(int(1.4 * (p + max(c, r))) + 45 for p, c, r in zip(pw, cw, rw))
        first = {r.split()[0] for _, _, r in recs}
        print(f"{name}: {len(recs)} records; prompt words {min(pw)}-{max(pw)}; "
              f"chosen words {min(cw)}-{max(cw)} (mean {sum(cw)/len(cw):.1f}); "
              f"rejected words {min(rw)}-{max(rw)} (mean {sum(rw)/len(rw):.1f}); "
              f"{len(first)} distinct rejected first words; est. max tokens {longest}")
        if longest >= 256:
            errors.append(f"{name}: estimated sequence length {longest} >= 256")
    print(f"prompt overlap between files: {len(overlap)}")
    if overlap:
        errors.append(f"prompts shared by train and eval: {sorted(overlap)[:5]}")
    if errors:
        for e in errors:
            print("ERROR", e, file=sys.stderr)
        return 1
    print("check: OK")
    return 0


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--check", action="store_true", help="validate the written files and print stats")
    args = ap.parse_args()
    if args.check:
        return check([TRAIN_PATH, EVAL_PATH])
    train, evals = build()
    write(TRAIN_PATH, train)
    write(EVAL_PATH, evals)
    print(f"wrote {len(train)} records to {TRAIN_PATH.relative_to(ROOT)}")
    print(f"wrote {len(evals)} records to {EVAL_PATH.relative_to(ROOT)}")
    return check([TRAIN_PATH, EVAL_PATH])


if __name__ == "__main__":
    sys.exit(main())
