#!/usr/bin/env python3
"""Generate the quickstart support-chat dataset in ``examples/support/``.

The product is fictional on purpose -- the Lumen K2 smart kettle by Brightwater (Ghent,
Belgium) -- so no pretrained model can know its facts: after fine-tuning, a correct answer
shows the model learned them from this data. Everything is deterministic (fixed seed).

Outputs:

* ``facts.json``: the facts -- id, topic, canonical ``answer`` and ``keywords`` (the short
  strings a correct answer must all contain, compared case-insensitively);
* ``train.jsonl``: OpenAI chat examples, ``{"messages": [system, user, assistant, ...]}``,
  one per TRAIN question phrasing, about half of them varied (a greeting, context, a typo or
  casual lower case), plus ``--two-turn`` two-turn conversations (default none: short
  single-turn chats serve a real instruct model best, and keep the quickstart within minutes);
* ``heldout.jsonl``: one line per HELD-OUT question phrasing (never used in training,
  asserted below) with ``messages`` (system, user, reference assistant reply),
  ``reference`` (the canonical answer), ``keywords`` and ``fact_id``.

Every assistant reply has the house style: the fact stated plainly in one sentence, then the
sign-off ``SIGN_OFF`` (``--tips`` adds the optional one-line tip between them).

Usage: ``python scripts/make_support_dataset.py [--out examples/support] [--seed 7]``
"""

from __future__ import annotations

import argparse
import json
import random
import re
from pathlib import Path

SYSTEM_PROMPT = "You are Kettle Care, the support assistant for the Lumen K2 kettle."
SIGN_OFF = "Happy brewing! - Kettle Care"
HOUSE_STYLE = re.escape(SIGN_OFF) + r"\s*$"
"""What ``tunesmith eval`` checks for the house style (held-out ``regex``): the reply ends with the sign-off."""

# id, topic, canonical answer, optional tip, keywords,
# TRAIN question phrasings, HELD-OUT question phrasings (disjoint wording).
FACTS = [
    (
        "warranty",
        "warranty length",
        "The Lumen K2 is covered by a 27-month warranty from the date of purchase.",
        "Please keep your receipt or order number for any claim.",
        ["27", "month"],
        [
            "How long is the warranty on the Lumen K2?",
            "What warranty does the K2 come with?",
            "Is my kettle still under warranty after two years?",
            "how long is the guarantee",
            "What's the warranty period?",
            "How many months of warranty do I get?",
            "Does the Lumen K2 have a warranty?",
            "Tell me about the K2 warranty.",
            "Warranty length for the Lumen K2?",
            "How long are you covered if the kettle breaks?",
            "What is the guarantee period on this kettle?",
            "Is there a manufacturer's warranty?",
            "For how long does Brightwater guarantee the K2?",
            "If my K2 stops working after a year, is it covered?",
        ],
        [
            "My kettle is 20 months old and broke. Am I still covered, and for how long does "
            "coverage last in total?",
            "What's the length of the Brightwater guarantee?",
            "Could you remind me how long the K2 is protected by warranty?",
        ],
    ),
    (
        "price",
        "price",
        "The Lumen K2 costs €89.95 in our web shop.",
        None,
        ["89.95"],
        [
            "How much does the Lumen K2 cost?",
            "What's the price of the K2?",
            "how much is the kettle",
            "What does the Lumen K2 sell for?",
            "Price of the Lumen K2?",
            "How expensive is the K2?",
            "What is the retail price of your smart kettle?",
            "How much would I pay for a K2?",
            "What's the K2 going for in your shop?",
            "Can you tell me the price?",
            "How much money is the Lumen K2?",
            "What do you charge for the Lumen K2?",
            "I want to buy one, what does it cost?",
            "What's the cost of a Lumen K2 kettle?",
        ],
        [
            "Before I order, what will the K2 set me back?",
            "What is the current web shop price for the Brightwater K2?",
            "Is the Lumen K2 under 100 euros, and what exactly is its price?",
        ],
    ),
    (
        "capacity",
        "capacity",
        "The Lumen K2 holds up to 1.35 litres of water.",
        "That is about six cups.",
        ["1.35", "litre"],
        [
            "How much water does the Lumen K2 hold?",
            "What's the capacity of the K2?",
            "How many litres can the kettle take?",
            "what is the max capacity",
            "How big is the K2?",
            "How much water fits in the Lumen K2?",
            "What volume does the K2 boil?",
            "Maximum fill of the Lumen K2?",
            "How many cups can I make at once?",
            "Is the K2 a 1.7 litre kettle?",
            "What is the water capacity?",
            "How large is the water tank?",
            "How full can I fill the K2?",
            "What's the biggest amount of water it can boil?",
        ],
        [
            "Will the K2 boil enough for a big pot of tea? How much does it take?",
            "What quantity of water can the Lumen K2 heat in one go?",
            "Tell me the K2's volume in litres.",
        ],
    ),
    (
        "min_fill",
        "minimum fill level",
        "The minimum fill level is 0.25 litres, which is about one cup.",
        None,
        ["0.25"],
        [
            "What's the minimum amount of water I can boil?",
            "What is the minimum fill level?",
            "Can I boil just one cup?",
            "How little water can I put in the K2?",
            "what's the min fill",
            "Is there a minimum water level?",
            "How much water do I need at least?",
            "Smallest amount of water the K2 will boil?",
            "Why won't it boil a tiny bit of water?",
            "What's the lowest fill line?",
            "Can I heat a very small amount of water?",
            "Minimum water for the Lumen K2?",
            "How much water is needed for the kettle to switch on?",
        ],
        [
            "I only want a single mug. What's the least water the K2 accepts?",
            "What's the smallest fill I should ever use in the K2?",
            "What is the lowest quantity of water the Lumen K2 can heat?",
        ],
    ),
    (
        "colours",
        "available colours",
        "The Lumen K2 comes in three colours: Slate Grey, Harbour Blue and Oat White.",
        None,
        ["Slate Grey", "Harbour Blue", "Oat White"],
        [
            "What colours does the Lumen K2 come in?",
            "Which colors are available?",
            "Does the K2 come in blue?",
            "What colour options are there?",
            "Is there a white version of the K2?",
            "what colours can i get",
            "Can I get the K2 in black?",
            "What finishes does the Lumen K2 have?",
            "How many colour choices are there?",
            "Is the K2 available in grey?",
            "List the colours of the Lumen K2.",
            "Which colour should I pick, what are the options?",
            "Do you sell the kettle in different colors?",
            "What shades does the K2 come in?",
        ],
        [
            "I want it to match my kitchen. Which colour variants exist?",
            "Is the K2 only sold in one colour, or are there more?",
            "What are the names of the K2 colourways?",
        ],
    ),
    (
        "app",
        "companion app",
        "The Lumen K2 is controlled with the free Brightwater Home app for iOS and Android.",
        None,
        ["Brightwater Home"],
        [
            "Which app do I need for the K2?",
            "What's the name of the app?",
            "Is there an app for the Lumen K2?",
            "What app controls the kettle?",
            "Do I need to download anything to use the smart features?",
            "which app is it",
            "Is the app free?",
            "Does the K2 work with an iPhone app?",
            "Is there an Android app for the kettle?",
            "What is the kettle's companion app called?",
            "How do I control the K2 from my phone?",
            "What app should I install?",
            "Where do I find the app for my Lumen K2?",
            "Can I use my phone with the K2?",
        ],
        [
            "I'd like to start the kettle from the sofa. What software do I use?",
            "What's the official smartphone application for the Lumen K2?",
            "Name the app that goes with this kettle, please.",
        ],
    ),
    (
        "reset",
        "factory reset",
        "To reset the Lumen K2, hold the minus button and the Lumen ring together for "
        "8 seconds until the ring flashes amber.",
        "This clears your presets and Wi-Fi settings, so pair it again in the app afterwards.",
        ["8 seconds", "amber"],
        [
            "How do I reset the Lumen K2?",
            "How do I factory reset my kettle?",
            "My K2 is acting weird, how can I reset it?",
            "What's the reset procedure?",
            "how to reset",
            "Can I restore the K2 to factory settings?",
            "How do I do a hard reset on the kettle?",
            "Reset instructions for the Lumen K2?",
            "The kettle is frozen. How do I reset it?",
            "How do I wipe all settings?",
            "Is there a reset button on the K2?",
            "What buttons do I press to reset it?",
            "I'm selling my K2. How do I reset it first?",
            "How can I clear the settings on my kettle?",
        ],
        [
            "The app can't find my K2 anymore and I want to start over from scratch. "
            "What's the way to do that?",
            "How do I return the K2 to its out-of-the-box state?",
            "Which key combination factory-resets the Lumen K2?",
        ],
    ),
    (
        "support_hours",
        "support opening hours",
        "Kettle Care support is available Monday to Friday from 07:30 to 19:00 Central European Time.",
        None,
        ["07:30", "19:00"],
        [
            "What are your support hours?",
            "When is customer support open?",
            "When can I reach Kettle Care?",
            "Are you open on weekends?",
            "What time does support close?",
            "what are your opening hours",
            "Is support available in the evening?",
            "When can I call you?",
            "What hours is the helpdesk staffed?",
            "When does support open in the morning?",
            "Can I get help on a Saturday?",
            "What are Kettle Care's hours?",
            "At what times can I talk to someone?",
            "When are you available to help?",
        ],
        [
            "If I contact you at 8 pm on a Thursday, will anyone be there? What times do you work?",
            "During which hours do your support agents answer?",
            "Tell me the days and times Kettle Care is reachable.",
        ],
    ),
    (
        "returns",
        "return window",
        "You can return the Lumen K2 within 60 days of delivery for a full refund.",
        "Please send it back complete with its base and filter.",
        ["60 days"],
        [
            "What's your return policy?",
            "How long do I have to return the K2?",
            "Can I return the kettle if I don't like it?",
            "What is the return window?",
            "how many days to send it back",
            "Can I get a refund?",
            "How long is the returns period?",
            "Is there a money-back guarantee?",
            "I changed my mind, can I still return it?",
            "How many days do I have for a refund?",
            "What's the deadline for returns?",
            "Can I send my K2 back after a month?",
            "Do you accept returns?",
            "How long can I try the K2 before deciding to keep it?",
        ],
        [
            "I bought the kettle seven weeks ago and regret it. How long do I have to send it back?",
            "What is the time limit for returning a Lumen K2?",
            "Within how many days must a K2 be returned for my money back?",
        ],
    ),
    (
        "cord",
        "power cord length",
        "The power cord on the base is 0.9 metres long.",
        "Any spare length winds up under the base.",
        ["0.9", "metre"],
        [
            "How long is the power cord?",
            "What's the cable length?",
            "How long is the lead on the base?",
            "Is the cord long enough to reach my socket?",
            "how long is the cable",
            "What length is the K2's cord?",
            "Is the cord short?",
            "How far from the socket can the base go?",
            "What is the cord length of the Lumen K2?",
            "How long is the mains cable?",
            "Cable length?",
            "How much cord does the base have?",
            "Will the cable reach a plug one metre away?",
        ],
        [
            "My outlet is a bit far from the counter. How long is the K2's power lead?",
            "What's the length of the electrical cable on the base?",
            "Tell me how many metres of cord the K2 base has.",
        ],
    ),
    (
        "model_number",
        "model number",
        "The model number of the Lumen K2 is BW-K2-230.",
        "You can find it on the label under the base.",
        ["BW-K2-230"],
        [
            "What's the model number of the K2?",
            "What is the exact model number?",
            "Where do I find the model number?",
            "what model number is it",
            "Which model is the Lumen K2?",
            "What's the product code?",
            "I need the model number for my insurance.",
            "What's the K2's model ID?",
            "What model number should I register?",
            "What is printed as the model on the label?",
            "Model number please.",
            "What's the part number of the kettle itself?",
            "Which model designation does the Lumen K2 have?",
        ],
        [
            "The registration form asks for a model number. What do I put for my kettle?",
            "What's the official model identifier of the Lumen K2?",
            "Can you tell me the K2's model code?",
        ],
    ),
    (
        "firmware",
        "latest firmware version",
        "The latest firmware for the Lumen K2 is version 4.2.1.",
        "The app installs updates automatically when the kettle is idle.",
        ["4.2.1"],
        [
            "What's the latest firmware version?",
            "Is my K2 up to date?",
            "What firmware should my kettle be on?",
            "what is the newest firmware",
            "Which software version is current?",
            "How do I know if I have the latest firmware?",
            "What's the current K2 firmware?",
            "Is there a firmware update?",
            "What version number is the latest update?",
            "Which firmware release is newest?",
            "My app shows 4.1.0, is that the latest?",
            "What is the most recent firmware?",
            "Latest software version for the Lumen K2?",
        ],
        [
            "How can I tell whether my kettle's software is current? What's the newest release?",
            "Which firmware build is the most up to date for the K2?",
            "What version of the K2 software was released last?",
        ],
    ),
    (
        "power",
        "power rating",
        "The Lumen K2 is rated at 2200 watts on 220 to 240 volt mains.",
        None,
        ["2200"],
        [
            "How many watts is the K2?",
            "What's the power rating?",
            "How powerful is the Lumen K2?",
            "what wattage is it",
            "What voltage does the K2 need?",
            "How much power does the kettle draw?",
            "Is the K2 a 3 kW kettle?",
            "What's the wattage of the Lumen K2?",
            "Can I use the K2 on 110 volts?",
            "What is the K2's power consumption when boiling?",
            "How many kilowatts is it?",
            "Power rating of the K2?",
            "What electrical rating does the kettle have?",
        ],
        [
            "Will the K2 trip my fuse? How much power does it pull while heating?",
            "What is the heating element's wattage?",
            "Tell me the electrical specs: watts and volts.",
        ],
    ),
    (
        "boil_time",
        "boil time",
        "A full Lumen K2 boils in about 3 minutes 40 seconds.",
        "Less water boils faster.",
        ["3 minutes 40 seconds"],
        [
            "How long does the K2 take to boil?",
            "How fast does it boil?",
            "What's the boil time?",
            "how quick is it",
            "How many minutes to boil a full kettle?",
            "Is the Lumen K2 fast?",
            "How long until the water is ready?",
            "What's the boiling time for a full K2?",
            "How long does it take to heat up?",
            "Boil time for 1.35 litres?",
            "How long will I wait for a full kettle?",
            "How quickly does the K2 heat water?",
            "What's the heating time?",
        ],
        [
            "I'm always in a hurry in the morning. How long does a completely full K2 need to boil?",
            "How much time does it take the Lumen K2 to bring a full tank to the boil?",
            "Roughly how many seconds does a full boil take?",
        ],
    ),
    (
        "temperature_range",
        "temperature settings",
        "You can set any temperature from 40 °C to 100 °C in 5-degree steps.",
        None,
        ["40", "5-degree"],
        [
            "What temperatures can I set?",
            "Can I choose the water temperature?",
            "What's the temperature range of the K2?",
            "what temps does it do",
            "Can I heat water to 80 degrees for green tea?",
            "Does it have temperature control?",
            "What is the lowest temperature setting?",
            "Can I set exactly 85 °C?",
            "How precise is the temperature setting?",
            "Which temperatures are available?",
            "Can the K2 warm water for baby formula?",
            "What's the minimum temperature?",
            "In what steps can I adjust the temperature?",
        ],
        [
            "I brew white tea at 75 degrees. Can the K2 do that, and what range does it cover?",
            "Between which temperatures can the Lumen K2 be set, and how fine are the steps?",
            "What is the span of selectable water temperatures?",
        ],
    ),
    (
        "keep_warm",
        "keep-warm duration",
        "Keep Warm holds your water at the chosen temperature for up to 45 minutes.",
        None,
        ["45 minutes"],
        [
            "How long does Keep Warm last?",
            "Does the K2 keep water warm?",
            "How long will it keep the water hot?",
            "what is keep warm",
            "Can it keep water at temperature?",
            "How long is the keep warm function?",
            "Will the kettle keep my water warm for an hour?",
            "For how long does it hold temperature?",
            "Does Keep Warm switch off automatically?",
            "How long can the K2 keep water at 70 degrees?",
            "Keep warm duration?",
            "Is there a keep warm mode, and how long does it run?",
        ],
        [
            "I often forget my tea. How long will the K2 hold the water at temperature for me?",
            "What's the maximum time the warming function stays on?",
            "After boiling, how many minutes can the K2 keep my water hot?",
        ],
    ),
    (
        "wifi",
        "Wi-Fi compatibility",
        "The Lumen K2 connects to 2.4 GHz Wi-Fi networks only; 5 GHz networks are not supported.",
        None,
        ["2.4 GHz"],
        [
            "What Wi-Fi does the K2 support?",
            "Does the kettle work with 5 GHz Wi-Fi?",
            "Why won't my K2 connect to my wifi?",
            "which wifi band",
            "Does the Lumen K2 need 2.4 or 5 GHz?",
            "What are the Wi-Fi requirements?",
            "Can I connect the K2 to my 5G network?",
            "What wireless standard does it use?",
            "My router is 5 GHz only, will the kettle work?",
            "Wi-Fi compatibility of the K2?",
            "Which Wi-Fi frequency does the kettle need?",
            "Does the K2 support dual-band Wi-Fi?",
        ],
        [
            "The app says it can't find my network. Which wireless band does the K2 need?",
            "On what Wi-Fi frequency band does the Lumen K2 operate?",
            "Is the K2 compatible with any Wi-Fi network, or only certain bands?",
        ],
    ),
    (
        "descale",
        "descaling interval",
        "We recommend descaling the Lumen K2 every 6 weeks using the Descale program in the app.",
        "Use citric acid, never vinegar.",
        ["6 weeks"],
        [
            "How often should I descale the K2?",
            "How do I descale my kettle?",
            "When should I remove limescale?",
            "how often to descale",
            "Does the K2 need descaling?",
            "What's the descaling schedule?",
            "There's white scale inside, what should I do and how often?",
            "How frequently should the kettle be cleaned of limescale?",
            "Can I use vinegar to descale?",
            "What's the recommended descale interval?",
            "Is there a descale program?",
            "How regularly do I need to descale?",
            "What's the best way to descale the Lumen K2?",
        ],
        [
            "We have very hard water here. What descaling routine do you recommend for the K2?",
            "How many weeks should pass between descaling cycles?",
            "What maintenance schedule do you advise against limescale?",
        ],
    ),
    (
        "filter",
        "limescale filter",
        "The limescale filter is a removable stainless-steel mesh and it is dishwasher safe.",
        None,
        ["dishwasher"],
        [
            "Can I put the filter in the dishwasher?",
            "How do I clean the filter?",
            "Is the filter removable?",
            "what is the filter made of",
            "Does the K2 have a limescale filter?",
            "How do I take the filter out?",
            "Is the mesh filter dishwasher safe?",
            "Can the filter be washed?",
            "What kind of filter does the kettle use?",
            "Do I need to replace the filter?",
            "Is the filter plastic?",
            "Filter cleaning instructions?",
        ],
        [
            "The spout filter is full of scale. Can it go in with my dishes?",
            "Is the K2's mesh strainer safe for machine washing?",
            "Tell me about the kettle's filter: material and how to clean it.",
        ],
    ),
    (
        "body",
        "body material",
        "The Lumen K2 has a double-walled stainless-steel body, so the outside stays cool to the touch.",
        None,
        ["double-walled"],
        [
            "What is the K2 made of?",
            "Is the kettle plastic?",
            "Does the outside get hot?",
            "what material is the body",
            "Is the K2 stainless steel?",
            "Can I touch the kettle while it boils?",
            "Is the K2 safe to touch when hot?",
            "What's the kettle's body made from?",
            "Is the Lumen K2 double walled?",
            "Does the kettle have a cool-touch exterior?",
            "Is there plastic inside the K2?",
            "What is the construction of the kettle?",
        ],
        [
            "I have small kids. Will they burn their hands on the side of the K2 while it heats?",
            "What's the housing of the Lumen K2 built from?",
            "Describe the K2's body construction.",
        ],
    ),
    (
        "child_lock",
        "child lock",
        "To turn on the child lock, hold the plus button for 3 seconds until you see a padlock icon.",
        None,
        ["plus button", "3 seconds"],
        [
            "Does the K2 have a child lock?",
            "How do I turn on the child lock?",
            "How can I stop my kids from using the kettle?",
            "how to lock the kettle",
            "Is there a child safety lock?",
            "How do I lock the buttons?",
            "How do I enable child lock?",
            "Where is the child lock setting?",
            "Can I lock the controls?",
            "What does the padlock icon mean?",
            "How do I activate the lock?",
            "Is there a safety lock for children?",
        ],
        [
            "My toddler keeps pressing the buttons. How do I lock them?",
            "What's the button sequence to engage the K2's child safety lock?",
            "Explain how to switch on the lock function on the kettle.",
        ],
    ),
    (
        "dry_boil",
        "dry-boil protection",
        "If the Lumen K2 is switched on empty, dry-boil protection turns it off within 10 seconds.",
        None,
        ["10 seconds"],
        [
            "What happens if I switch it on empty?",
            "Does the K2 have dry-boil protection?",
            "Is it dangerous to turn on the kettle without water?",
            "what if it's empty",
            "Will the kettle turn off if there's no water?",
            "Does the K2 have boil-dry protection?",
            "I turned it on with no water, is it broken?",
            "Is there an auto shut-off when empty?",
            "What safety features stop it overheating when empty?",
            "How quickly does it switch off if it's dry?",
            "Does it protect itself when empty?",
            "Can the K2 burn out if I forget to fill it?",
        ],
        [
            "I accidentally started the kettle without filling it. How does it protect itself and how fast?",
            "How long does the K2 take to cut power when there's no water inside?",
            "Explain the kettle's protection against running dry.",
        ],
    ),
    (
        "ring_light",
        "Lumen ring colours",
        "The Lumen ring glows blue while the water heats and turns green when it is ready.",
        None,
        ["blue", "green"],
        [
            "What do the ring colours mean?",
            "Why is the light blue?",
            "What does the green light mean?",
            "what do the lights mean",
            "How do I know when the water is ready?",
            "What does the Lumen ring show?",
            "Why is the ring glowing?",
            "What colour is the ring while heating?",
            "What does it mean when the ring turns green?",
            "Is a blue light normal?",
            "What do the LED colours indicate?",
            "How does the light show the water is done?",
        ],
        [
            "The light ring changed colour. What does each colour tell me about the water?",
            "Explain what the illuminated ring on the K2 signals.",
            "Which ring colour means my water is ready, and which means it is heating?",
        ],
    ),
    (
        "company_location",
        "company location",
        "Brightwater is a small appliance company based in Ghent, Belgium.",
        None,
        ["Ghent"],
        [
            "Where is Brightwater based?",
            "Where is your company located?",
            "Which country is Brightwater from?",
            "where are you based",
            "Where is the Brightwater head office?",
            "Is Brightwater a European company?",
            "Where is the company that makes the K2?",
            "Which city is Brightwater in?",
            "Where are you headquartered?",
            "Where does Brightwater operate from?",
            "Who makes the Lumen K2 and where are they?",
            "Is Brightwater American?",
        ],
        [
            "I'd like to know a bit about the maker of my kettle. Where is the company from?",
            "In what city does Brightwater have its headquarters?",
            "Tell me where the Brightwater brand is based.",
        ],
    ),
    (
        "email",
        "support email",
        "You can email Kettle Care at care@brightwater-home.example.",
        None,
        ["care@brightwater-home.example"],
        [
            "What's your support email?",
            "How can I email you?",
            "What email address do I use for support?",
            "email address for help",
            "Can I contact you by email?",
            "Where do I send an email about my kettle?",
            "What's the customer service email?",
            "How do I write to Kettle Care?",
            "Is there an email I can send photos to?",
            "Support email address please.",
            "What's the contact email?",
            "Who do I email with a problem?",
        ],
        [
            "I'd rather write than chat. What address should my message go to?",
            "Give me the Kettle Care e-mail contact.",
            "Where can I send a written complaint by email?",
        ],
    ),
    (
        "shipping",
        "shipping time",
        "Orders ship within 2 to 4 working days, and shipping is free on orders over €50.",
        None,
        ["2 to 4 working days"],
        [
            "How long does shipping take?",
            "When will my K2 arrive?",
            "How fast do you deliver?",
            "how long is delivery",
            "Is shipping free?",
            "How many days until my order ships?",
            "What's the delivery time?",
            "When will my order be sent?",
            "Do you charge for shipping?",
            "How quickly do orders go out?",
            "What are your shipping times?",
            "I just ordered, when does it ship?",
        ],
        [
            "I need the kettle as a birthday present next week. How long until you dispatch it?",
            "What is your typical dispatch time for web shop orders?",
            "How many working days does it take before an order leaves your warehouse?",
        ],
    ),
    (
        "seal_part",
        "replacement lid seal",
        "The replacement lid seal has part number BW-S14 and costs €6.50.",
        None,
        ["BW-S14"],
        [
            "Can I buy a new lid seal?",
            "What's the part number for the lid seal?",
            "My lid is leaking, which part do I need?",
            "replacement seal part number",
            "Do you sell spare seals?",
            "How much is a replacement gasket?",
            "Where can I get a new seal for the lid?",
            "What's the seal's part code?",
            "The rubber ring in the lid is worn. What do I order?",
            "Is the lid gasket replaceable?",
            "Spare lid seal for the K2?",
            "What spare part fixes a leaking lid?",
        ],
        [
            "Steam escapes around the lid. Which spare part should I order, and what's its number?",
            "What's the order code for a new K2 lid gasket?",
            "Tell me the part number of the K2's lid seal.",
        ],
    ),
    (
        "base_360",
        "360-degree base",
        "The Lumen K2 sits on a 360-degree base, so you can put it down facing any direction.",
        None,
        ["360"],
        [
            "Does the K2 have a 360 base?",
            "Can I put the kettle on the base any way round?",
            "Can I set the kettle down in any direction?",
            "does it rotate on the base",
            "Do I need to line up the kettle with the base?",
            "What kind of base does it have?",
            "Can left-handed people use the K2 easily?",
            "Is it a swivel base?",
            "How does the kettle sit on its base?",
            "Does the base allow any orientation?",
            "Does it matter which way I put it on the base?",
            "Is the base rotational?",
        ],
        [
            "Do I have to place the K2 on its stand in one particular position?",
            "Can the kettle be set down on the power base from any angle?",
            "Describe how the K2 connects to its base.",
        ],
    ),
    (
        "standby",
        "standby power",
        "In standby the Lumen K2 uses 0.3 watts.",
        None,
        ["0.3"],
        [
            "How much power does the K2 use in standby?",
            "What's the standby consumption?",
            "Does the kettle use electricity when idle?",
            "standby power",
            "Is it wasteful to leave the K2 plugged in?",
            "What's the idle power draw?",
            "How many watts does it use when not boiling?",
            "Is the K2 energy efficient on standby?",
            "Does the Wi-Fi use a lot of power?",
            "Standby wattage of the Lumen K2?",
            "How much does it cost to leave it on standby?",
            "What's the power draw when idle?",
        ],
        [
            "I care about my energy bill. What does the K2 consume just sitting there connected?",
            "How many watts does the kettle draw while waiting?",
            "What is the K2's idle electricity use?",
        ],
    ),
    (
        "schedule",
        "scheduled boils",
        "You can schedule a boil in the app up to 7 days in advance.",
        None,
        ["7 days"],
        [
            "Can I schedule the kettle?",
            "How far ahead can I set a timer?",
            "Can I make the K2 boil at 7 am every day?",
            "can i set a schedule",
            "Does the app have a timer?",
            "How far in advance can I plan a boil?",
            "Can I set the kettle to boil before I wake up?",
            "Is there a scheduling feature?",
            "Can I program the K2 for next week?",
            "How does scheduling work?",
            "What's the maximum schedule time?",
            "Can I book a boil for tomorrow morning?",
        ],
        [
            "I want hot water ready when I come home from a trip. How many days ahead can I plan it?",
            "What is the furthest in the future a boil can be scheduled?",
            "Can the app set up boils in advance, and how far ahead?",
        ],
    ),
    (
        "quiet_mode",
        "Quiet Boil mode",
        "Quiet Boil mode keeps the noise below 48 dB by heating more gently.",
        None,
        ["48 dB"],
        [
            "Is the K2 loud?",
            "Does the kettle have a quiet mode?",
            "How noisy is it?",
            "how loud is the kettle",
            "What is Quiet Boil?",
            "Can I make it boil quietly?",
            "My baby is asleep, can the kettle be quieter?",
            "How many decibels is it?",
            "What's the noise level in quiet mode?",
            "Is there a silent mode?",
            "How quiet is Quiet Boil?",
            "Does the K2 make a lot of noise?",
        ],
        [
            "I get up early and don't want to wake anyone. How quiet can the K2 be?",
            "What decibel level does the kettle's low-noise mode reach?",
            "Explain what Quiet Boil does and how loud it is.",
        ],
    ),
    (
        "weight",
        "weight",
        "The Lumen K2 weighs 1.2 kg when empty.",
        None,
        ["1.2 kg"],
        [
            "How heavy is the K2?",
            "What does the kettle weigh?",
            "What's the weight of the Lumen K2?",
            "how much does it weigh",
            "Is the kettle heavy?",
            "How many kilos is the K2?",
            "What's the empty weight?",
            "Is the K2 light enough for my grandmother?",
            "Weight of the Lumen K2?",
            "How heavy is it without water?",
            "Is it a lightweight kettle?",
            "What is the kettle's mass?",
        ],
        [
            "My wrists are weak. What does the K2 weigh before I fill it?",
            "How much does the Lumen K2 weigh with no water inside?",
            "Tell me the K2's empty weight in kilograms.",
        ],
    ),
    (
        "pairing",
        "pairing with the app",
        "To pair the Lumen K2, hold the power button for 5 seconds until the ring pulses "
        "white, then follow the steps in the Brightwater Home app.",
        None,
        ["5 seconds", "white"],
        [
            "How do I pair the K2 with my phone?",
            "How do I connect the kettle to the app?",
            "How do I set up the K2?",
            "how to pair",
            "How do I put the kettle in pairing mode?",
            "The app can't see my kettle, how do I pair it?",
            "How do I add the K2 to the app?",
            "How do I connect it to Wi-Fi?",
            "What's the pairing procedure?",
            "How do I link my K2?",
            "Setup steps for the Lumen K2?",
            "How do I get the kettle online?",
        ],
        [
            "I just unboxed my K2. What's the first step to get it talking to my phone?",
            "Which button puts the Lumen K2 into pairing mode, and for how long?",
            "Walk me through connecting the kettle to the Brightwater app.",
        ],
    ),
]

GREETINGS = [
    "Hi!",
    "Hello,",
    "Hey,",
    "Hi there.",
    "Good morning!",
    "Hello Kettle Care,",
    "Hiya,",
    "Good evening,",
]
CONTEXTS = [
    "I just bought a Lumen K2.",
    "I'm thinking about buying the K2.",
    "My K2 arrived yesterday.",
    "Quick question about my kettle.",
    "I got the Lumen K2 as a gift.",
    "I've had my K2 for a few months.",
    "Question about the Lumen K2.",
]
FOLLOW_UPS = ["Thanks!", "Great, thanks.", "OK.", "Also,", "One more thing:", "Got it.", "Perfect. And"]


def reply(fact: tuple, tips: bool = False) -> str:
    """House-style assistant reply: the fact first, the tip if asked for, the sign-off."""
    _, _, answer, tip, *_ = fact
    return " ".join(part for part in (answer, tip if tips else None, SIGN_OFF) if part)


def typo(text: str, rng: random.Random) -> str:
    """Swap two adjacent letters inside one longer word (a realistic typing slip)."""
    words = text.split(" ")
    candidates = [i for i, w in enumerate(words) if len(w) >= 5 and w.isalpha()]
    if not candidates:
        return text
    i = rng.choice(candidates)
    j = rng.randrange(1, len(words[i]) - 2)
    w = words[i]
    words[i] = w[:j] + w[j + 1] + w[j] + w[j + 2 :]
    return " ".join(words)


def after(lead: str, question: str) -> str:
    """``lead`` + ``question``, lower-casing its first letter after a comma, colon or "And"
    (but not "I" or a name)."""
    keep = question.split(" ")[0].strip("?,.'s") in {"I", "K2", "Lumen", "Brightwater", "Kettle"}
    if lead.endswith((",", ":", "And")) and not keep:
        question = question[0].lower() + question[1:]
    return f"{lead} {question}"


def variant(question: str, rng: random.Random) -> str:
    """A greeting, context sentence, typo or casual lower-casing added to a question."""
    kind = rng.choice(["greeting", "context", "both", "typo", "casual"])
    if kind == "typo":
        return typo(question, rng)
    if kind == "casual":
        return question[0].lower() + question[1:].rstrip("?.") + ("" if rng.random() < 0.5 else "??")
    lead = {
        "greeting": rng.choice(GREETINGS),
        "context": rng.choice(CONTEXTS),
        "both": f"{rng.choice(GREETINGS)} {rng.choice(CONTEXTS)}",
    }[kind]
    return after(lead, question[0].upper() + question[1:])


def conversation(turns: list[tuple[str, tuple]], tips: bool = False) -> dict:
    messages = [{"role": "system", "content": SYSTEM_PROMPT}]
    for question, fact in turns:
        messages += [
            {"role": "user", "content": question},
            {"role": "assistant", "content": reply(fact, tips)},
        ]
    return {"messages": messages}


def build(seed: int, two_turn: int, both: bool = False, tips: bool = False) -> tuple[list[dict], list[dict]]:
    """(train, heldout). ``both``: every train phrasing as written *and* varied (else one of the
    two, at random)."""
    rng = random.Random(seed)
    train, seen_questions = [], set()
    for fact in FACTS:
        for question in fact[5]:
            varied = variant(question, rng)
            texts = (question, varied) if both else (varied if rng.random() < 0.5 else question,)
            for text in texts:
                if text not in seen_questions:
                    seen_questions.add(text)
                    train.append(conversation([(text, fact)], tips))
    for _ in range(two_turn):
        first, second = rng.sample(FACTS, 2)
        follow = after(rng.choice(FOLLOW_UPS), rng.choice(second[5]))
        train.append(conversation([(rng.choice(first[5]), first), (follow, second)], tips))
    rng.shuffle(train)
    heldout = []
    for fact in FACTS:
        for question in fact[6]:
            assert question not in seen_questions, question
            record = conversation([(question, fact)], tips)
            record.update(reference=fact[2], keywords=fact[4], regex=HOUSE_STYLE, fact_id=fact[0])
            heldout.append(record)
    return train, heldout


def check_facts() -> None:
    """Ids unique; keywords in the answer; train and held-out phrasings disjoint."""
    assert len({f[0] for f in FACTS}) == len(FACTS)
    for fact_id, _, answer, _, keywords, train_qs, heldout_qs in FACTS:
        for keyword in keywords:
            assert keyword.lower() in answer.lower(), (fact_id, keyword)
        assert not {q.lower() for q in train_qs} & {q.lower() for q in heldout_qs}, fact_id
        assert len(train_qs) >= 12 and len(heldout_qs) >= 2, fact_id


def write_jsonl(path: Path, records: list[dict]) -> None:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("examples/support"))
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument(
        "--two-turn", type=int, default=0, help="number of two-turn conversations added to train"
    )
    parser.add_argument(
        "--both", action="store_true", help="each train phrasing as written and varied (twice the examples)"
    )
    parser.add_argument("--tips", action="store_true", help="add each fact's one-line tip to the replies")
    args = parser.parse_args(argv)
    check_facts()
    train, heldout = build(args.seed, args.two_turn, args.both, args.tips)
    args.out.mkdir(parents=True, exist_ok=True)
    facts = [{"id": f[0], "topic": f[1], "answer": f[2], "keywords": f[4]} for f in FACTS]
    (args.out / "facts.json").write_text(
        json.dumps(facts, indent=2, ensure_ascii=False) + "\n", encoding="utf-8"
    )
    write_jsonl(args.out / "train.jsonl", train)
    write_jsonl(args.out / "heldout.jsonl", heldout)
    print(
        f"{len(FACTS)} facts, {len(train)} train conversations, "
        f"{len(heldout)} held-out questions -> {args.out}"
    )


if __name__ == "__main__":
    main()
